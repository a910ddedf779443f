import { sql, type Kysely } from 'kysely'
import { appRoleName } from './app-role.ts'
import { withLockRetry } from './lock-retry.ts'
import type { Step } from './step.ts'

export type TablePrivilege = 'select' | 'insert' | 'update' | 'delete'

/** Grants `privileges` on `table` to `role`, adding to what it has (a rerun grants nothing new). */
export async function grantOn(db: Kysely<any>, table: string, role: string, privileges: readonly TablePrivilege[]): Promise<void> {
  await withLockRetry(db, table, (trx) => sql`grant ${sql.raw(privileges.join(', '))} on ${sql.table(table)} to ${sql.id(role)}`.execute(trx))
}

export async function revokeAllOn(db: Kysely<any>, table: string, role: string): Promise<void> {
  await withLockRetry(db, table, (trx) => sql`revoke all on ${sql.table(table)} from ${sql.id(role)}`.execute(trx))
}

/** The application role gets exactly `privileges` on `table`; `down` revokes everything on it. */
export function grant(table: string, privileges: readonly TablePrivilege[]): Step {
  return {
    name: `grant ${privileges.join(', ')} on ${table}`,
    async up(db) {
      const role = await appRoleName(db)
      await withLockRetry(db, table, async (trx) => {
        await sql`revoke all on ${sql.table(table)} from ${sql.id(role)}`.execute(trx)
        await sql`grant ${sql.raw(privileges.join(', '))} on ${sql.table(table)} to ${sql.id(role)}`.execute(trx)
      })
    },
    down: async (db) => revokeAllOn(db, table, await appRoleName(db)),
  }
}
