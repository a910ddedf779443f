import { sql, type Kysely, type RawBuilder } from 'kysely'
import { columnInfo, ident } from './catalog.ts'
import { alterTable } from './alter-table.ts'
import type { Step } from './step.ts'

export interface ColumnSpec {
  table: string
  column: string
  type: string
  /**
   * A constant every existing row reads as. Stored in the catalog (PG 11+): no table rewrite,
   * and no row is ever without a value.
   */
  existingRows: (db: Kysely<any>) => Promise<RawBuilder<unknown>>
  /** The default for rows inserted from now on (may be volatile: it applies to new rows only). */
  newRows: (db: Kysely<any>) => Promise<RawBuilder<unknown>>
}

/** Adds a column in one short transaction with a lock timeout; `down` drops it (catalog-only too). */
export function addColumn(spec: ColumnSpec): Step {
  const { table, column } = spec
  ident(column)
  return {
    name: `${table}.${column}`,
    async up(db) {
      if (await columnInfo(db, table, column)) return
      const existing = await spec.existingRows(db)
      const next = await spec.newRows(db)
      await alterTable(db, table, [
        sql`add column ${sql.id(column)} ${sql.raw(spec.type)} default ${existing}`,
        sql`alter column ${sql.id(column)} set default ${next}`,
      ])
    },
    async down(db) {
      if (!(await columnInfo(db, table, column))) return
      await alterTable(db, table, sql`drop column if exists ${sql.id(column)}`)
    },
  }
}
