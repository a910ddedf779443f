import { sql } from 'kysely'
import { withLockRetry } from './lock-retry.ts'
import type { Step } from './step.ts'

/**
 * Makes a table append-only for every role, owner and superuser included: a row trigger refuses
 * UPDATE and DELETE, a statement trigger refuses TRUNCATE (which row triggers never see).
 */
export function appendOnly(table: string): Step {
  const fn = sql.id(`${table}_append_only`)
  return {
    name: `append-only ${table}`,
    async up(db) {
      await withLockRetry(db, table, async (trx) => {
        await sql`
          create or replace function ${fn}() returns trigger language plpgsql
          set search_path = pg_catalog, pg_temp as $$
          begin
            raise exception '% is append-only: % is not allowed', tg_table_name, tg_op
              using errcode = 'insufficient_privilege';
          end $$`.execute(trx)
        await sql`drop trigger if exists no_update_or_delete on ${sql.table(table)}`.execute(trx)
        await sql`create trigger no_update_or_delete before update or delete on ${sql.table(table)}
          for each row execute function ${fn}()`.execute(trx)
        await sql`drop trigger if exists no_truncate on ${sql.table(table)}`.execute(trx)
        await sql`create trigger no_truncate before truncate on ${sql.table(table)}
          for each statement execute function ${fn}()`.execute(trx)
      })
    },
    async down(db) {
      await withLockRetry(db, table, async (trx) => {
        await sql`drop trigger if exists no_update_or_delete on ${sql.table(table)}`.execute(trx)
        await sql`drop trigger if exists no_truncate on ${sql.table(table)}`.execute(trx)
        await sql`drop function if exists ${fn}()`.execute(trx)
      })
    },
  }
}
