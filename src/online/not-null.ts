import { sql } from 'kysely'
import { columnInfo, constraintInfo, ident } from './catalog.ts'
import { withLockRetry } from './lock-retry.ts'
import type { Step } from './step.ts'

/**
 * SET NOT NULL without a long exclusive lock: a CHECK added NOT VALID (instant), validated under
 * a lock that lets reads and writes go on, then SET NOT NULL, which trusts the validated CHECK and
 * skips its own scan (PG 12+), and the CHECK is dropped.
 */
export function notNull(table: string, column: string): Step {
  const check = `${ident(table)}_${ident(column)}_not_null`
  const dropCheck = async (db: Parameters<Step['up']>[0]) => {
    if (await constraintInfo(db, table, check)) {
      await withLockRetry(db, table, (trx) => sql`alter table ${sql.table(table)} drop constraint if exists ${sql.id(check)}`.execute(trx))
    }
  }
  return {
    name: `${table}.${column} not null`,
    async up(db) {
      if ((await columnInfo(db, table, column))?.notnull) return dropCheck(db)
      const existing = await constraintInfo(db, table, check)
      if (!existing) {
        await withLockRetry(db, table, (trx) =>
          sql`alter table ${sql.table(table)} add constraint ${sql.id(check)} check (${sql.id(column)} is not null) not valid`.execute(trx))
      }
      if (!existing?.validated) {
        await withLockRetry(db, table, (trx) => sql`alter table ${sql.table(table)} validate constraint ${sql.id(check)}`.execute(trx), { appSafe: true })
      }
      await withLockRetry(db, table, async (trx) => {
        await sql`alter table ${sql.table(table)} alter column ${sql.id(column)} set not null`.execute(trx)
        await sql`alter table ${sql.table(table)} drop constraint ${sql.id(check)}`.execute(trx)
      })
    },
    async down(db) {
      await dropCheck(db)
      if ((await columnInfo(db, table, column))?.notnull) {
        await withLockRetry(db, table, (trx) => sql`alter table ${sql.table(table)} alter column ${sql.id(column)} drop not null`.execute(trx))
      }
    },
  }
}
