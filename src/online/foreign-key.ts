import { sql } from 'kysely'
import { columnList, constraintInfo } from './catalog.ts'
import { alterTable, dropConstraint } from './alter-table.ts'
import type { Step } from './step.ts'

export interface ForeignKeySpec {
  table: string
  name: string
  columns: string[]
  references: { table: string; columns: string[] }
  /** `set null` may name the columns to null (PG 15+), so a composite key keeps its tenant_id. */
  onDelete?: 'cascade' | 'set null' | { setNull: string[] }
}

/**
 * A foreign key added NOT VALID (a brief lock, no scan), then VALIDATEd under a lock that lets
 * reads and writes go on. New rows are checked from the moment it is added.
 */
export function foreignKey(spec: ForeignKeySpec): Step {
  const { table, name } = spec
  const onDelete =
    spec.onDelete === undefined ? sql``
    : spec.onDelete === 'cascade' ? sql` on delete cascade`
    : spec.onDelete === 'set null' ? sql` on delete set null`
    : sql` on delete set null (${columnList(spec.onDelete.setNull)})`
  return {
    name: `${table}.${name}`,
    async up(db) {
      const existing = await constraintInfo(db, table, name)
      if (!existing) {
        await alterTable(db, table, sql`add constraint ${sql.id(name)}
          foreign key (${columnList(spec.columns)}) references ${sql.table(spec.references.table)} (${columnList(spec.references.columns)})${onDelete}
          not valid`)
      }
      if (!existing?.validated) await alterTable(db, table, sql`validate constraint ${sql.id(name)}`, { appSafe: true })
    },
    down: (db) => dropConstraint(db, table, name),
  }
}
