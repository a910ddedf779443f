import { sql } from 'kysely'
import { withLockRetry } from './lock-retry.ts'
import type { PolicySpec } from './row-security.ts'
import type { Step } from './step.ts'

/**
 * One permissive policy on a table whose row security is already on (see rowSecurity), for every
 * command; recreated on a rerun, not created when its role list comes back empty. `down` drops it.
 */
export function policy(table: string, spec: PolicySpec): Step {
  return {
    name: `policy ${spec.name} on ${table}`,
    async up(db) {
      const condition = typeof spec.condition === 'function' ? await spec.condition(db) : spec.condition
      const roles = spec.to ? await spec.to(db) : undefined
      await withLockRetry(db, table, async (trx) => {
        await sql`drop policy if exists ${sql.id(spec.name)} on ${sql.table(table)}`.execute(trx)
        if (roles?.length === 0) return
        const to = roles ? sql.join(roles.map((r) => sql.id(r))) : sql`public`
        await sql`create policy ${sql.id(spec.name)} on ${sql.table(table)} for all to ${to}
          using (${condition}) with check (${spec.check ?? condition})`.execute(trx)
      })
    },
    async down(db) {
      await withLockRetry(db, table, (trx) => sql`drop policy if exists ${sql.id(spec.name)} on ${sql.table(table)}`.execute(trx))
    },
  }
}
