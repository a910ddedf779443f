import { sql } from 'kysely'
import { alterTable, dropConstraint } from './alter-table.ts'
import { columnInfo, constraintInfo, ident } from './catalog.ts'
import type { Step } from './step.ts'

/**
 * SET NOT NULL without a long exclusive lock: a CHECK added NOT VALID (instant), validated under
 * a lock that lets reads and writes go on, then SET NOT NULL, which trusts the validated CHECK and
 * skips its own scan (PG 12+), and the CHECK is dropped.
 */
export function notNull(table: string, column: string): Step {
  const check = `${ident(table)}_${ident(column)}_not_null`
  return {
    name: `${table}.${column} not null`,
    async up(db) {
      if ((await columnInfo(db, table, column))?.notnull) return dropConstraint(db, table, check)
      const existing = await constraintInfo(db, table, check)
      if (!existing) await alterTable(db, table, sql`add constraint ${sql.id(check)} check (${sql.id(column)} is not null) not valid`)
      if (!existing?.validated) await alterTable(db, table, sql`validate constraint ${sql.id(check)}`, { appSafe: true })
      await alterTable(db, table, [sql`alter column ${sql.id(column)} set not null`, sql`drop constraint ${sql.id(check)}`])
    },
    async down(db) {
      await dropConstraint(db, table, check)
      if ((await columnInfo(db, table, column))?.notnull) await alterTable(db, table, sql`alter column ${sql.id(column)} drop not null`)
    },
  }
}
