import { sql, type Kysely, type RawBuilder } from 'kysely'
import { withLockRetry } from './lock-retry.ts'
import type { Step } from './step.ts'

export interface PolicySpec {
  name: string
  /** The condition rows must meet, for reads (USING) and, unless `check` says otherwise, writes (WITH CHECK). */
  condition: RawBuilder<unknown> | ((db: Kysely<any>) => Promise<RawBuilder<unknown>>)
  /** What a written row must meet (WITH CHECK), when it differs from `condition`. */
  check?: RawBuilder<unknown>
  /**
   * The roles it applies to, found when the step runs; PUBLIC when absent. A policy whose list
   * comes back empty is not created. Policies for other roles cost a role's queries nothing.
   */
  to?: (db: Kysely<any>) => Promise<string[]>
}

/**
 * Row-level security on `table`, FORCEd so the owner is filtered too, with permissive policies
 * (a row is visible when any policy that applies to the role lets it through).
 */
export function rowSecurity(table: string, policies: readonly PolicySpec[]): Step {
  return {
    name: `row security on ${table}`,
    async up(db) {
      // Resolved before the transaction: the lock is held only for the DDL itself.
      const resolved = await Promise.all(policies.map(async (p) => ({
        name: p.name,
        condition: typeof p.condition === 'function' ? await p.condition(db) : p.condition,
        to: p.to ? await p.to(db) : undefined,
        check: p.check,
      })))
      await withLockRetry(db, table, async (trx) => {
        for (const p of resolved) {
          await sql`drop policy if exists ${sql.id(p.name)} on ${sql.table(table)}`.execute(trx)
          if (p.to?.length === 0) continue
          const to = p.to ? sql.join(p.to.map((r) => sql.id(r))) : sql`public`
          await sql`create policy ${sql.id(p.name)} on ${sql.table(table)} for all to ${to}
            using (${p.condition}) with check (${p.check ?? p.condition})`.execute(trx)
        }
        await sql`alter table ${sql.table(table)} enable row level security`.execute(trx)
        await sql`alter table ${sql.table(table)} force row level security`.execute(trx)
      })
    },
    down: (db) =>
      withLockRetry(db, table, async (trx) => {
        for (const p of policies) await sql`drop policy if exists ${sql.id(p.name)} on ${sql.table(table)}`.execute(trx)
        await sql`alter table ${sql.table(table)} no force row level security`.execute(trx)
        await sql`alter table ${sql.table(table)} disable row level security`.execute(trx)
      }),
  }
}
