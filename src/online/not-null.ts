import { sql } from 'kysely'
import { alterTable, dropConstraint } from './alter-table.ts'
import { columnInfo, constraintInfo, ident } from './catalog.ts'
import type { Step } from './step.ts'

/**
 * SET NOT NULL without a long exclusive lock: a CHECK added NOT VALID (instant), validated under
 * a lock that lets reads and writes go on, then SET NOT NULL, which trusts the validated CHECK and
 * skips its own scan (PG 12+), and the CHECK is dropped.
 *
 * PostgreSQL 18 records NOT NULL itself as a constraint named `<table>_<column>_not_null`, the
 * name this step gives its CHECK: the step only ever touches a constraint of that name that is a
 * CHECK, never the real NOT NULL.
 */
export function notNull(table: string, column: string): Step {
  const check = `${ident(table)}_${ident(column)}_not_null`
  const ourCheck = async (db: Parameters<Step['up']>[0]) => {
    const found = await constraintInfo(db, table, check)
    return found?.type === 'c' ? found : undefined
  }
  const dropOurCheck = async (db: Parameters<Step['up']>[0]) => {
    if (await ourCheck(db)) await dropConstraint(db, table, check)
  }
  return {
    name: `${table}.${column} not null`,
    async up(db) {
      if ((await columnInfo(db, table, column))?.notnull) return dropOurCheck(db)
      const existing = await ourCheck(db)
      if (!existing) await alterTable(db, table, sql`add constraint ${sql.id(check)} check (${sql.id(column)} is not null) not valid`)
      if (!existing?.validated) await alterTable(db, table, sql`validate constraint ${sql.id(check)}`, { appSafe: true })
      await alterTable(db, table, [sql`alter column ${sql.id(column)} set not null`, sql`drop constraint ${sql.id(check)}`])
    },
    async down(db) {
      await dropOurCheck(db)
      if ((await columnInfo(db, table, column))?.notnull) await alterTable(db, table, sql`alter column ${sql.id(column)} drop not null`)
    },
  }
}
