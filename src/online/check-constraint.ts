import { sql, type RawBuilder } from 'kysely'
import { alterTable, dropConstraint } from './alter-table.ts'
import { constraintInfo } from './catalog.ts'
import type { Step } from './step.ts'

/**
 * A CHECK constraint without a long exclusive lock: added NOT VALID (instant: new rows are checked
 * from then on), then validated under a lock that lets reads and writes go on. `down` drops it.
 */
export function checkConstraint(spec: { table: string; name: string; condition: RawBuilder<unknown> }): Step {
  const { table, name } = spec
  return {
    name: `check ${name}`,
    async up(db) {
      const existing = await constraintInfo(db, table, name)
      if (!existing) await alterTable(db, table, sql`add constraint ${sql.id(name)} check (${spec.condition}) not valid`)
      if (!existing?.validated) await alterTable(db, table, sql`validate constraint ${sql.id(name)}`, { appSafe: true })
    },
    down: (db) => dropConstraint(db, table, name),
  }
}
