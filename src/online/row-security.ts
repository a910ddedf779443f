import { sql, type RawBuilder } from 'kysely'
import { withLockRetry } from './lock-retry.ts'
import type { Step } from './step.ts'

/**
 * Row-level security on `table`, FORCEd so the owner is filtered too, with one policy whose
 * condition applies to reads (USING) and writes (WITH CHECK) alike.
 */
export function rowSecurityPolicy(table: string, policy: string, condition: RawBuilder<unknown>): Step {
  return {
    name: `row security on ${table}`,
    up: (db) =>
      withLockRetry(db, table, async (trx) => {
        await sql`drop policy if exists ${sql.id(policy)} on ${sql.table(table)}`.execute(trx)
        await sql`create policy ${sql.id(policy)} on ${sql.table(table)} for all using (${condition}) with check (${condition})`.execute(trx)
        await sql`alter table ${sql.table(table)} enable row level security`.execute(trx)
        await sql`alter table ${sql.table(table)} force row level security`.execute(trx)
      }),
    down: (db) =>
      withLockRetry(db, table, async (trx) => {
        await sql`drop policy if exists ${sql.id(policy)} on ${sql.table(table)}`.execute(trx)
        await sql`alter table ${sql.table(table)} no force row level security`.execute(trx)
        await sql`alter table ${sql.table(table)} disable row level security`.execute(trx)
      }),
  }
}
