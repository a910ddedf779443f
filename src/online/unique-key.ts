import { sql } from 'kysely'
import { constraintInfo, indexInfo } from './catalog.ts'
import { buildIndexConcurrently, dropIndexConcurrently } from './concurrent-index.ts'
import { alterTable, dropConstraint } from './alter-table.ts'
import type { Step } from './step.ts'

/**
 * A UNIQUE constraint whose index is built CONCURRENTLY first, then attached with
 * `ADD CONSTRAINT … UNIQUE USING INDEX` (a brief lock, no scan).
 */
export function uniqueKey(spec: { table: string; name: string; columns: string[] }): Step {
  const { table, name } = spec
  return {
    name: `unique ${name}`,
    async up(db) {
      if (await constraintInfo(db, table, name)) return
      await buildIndexConcurrently(db, { ...spec, unique: true })
      await alterTable(db, table, sql`add constraint ${sql.id(name)} unique using index ${sql.id(name)}`)
    },
    async down(db) {
      await dropConstraint(db, table, name)
      await dropIndexConcurrently(db, name)
    },
  }
}

/**
 * Moves a table's primary key to other columns: the new key's index is built CONCURRENTLY, then
 * the old key is dropped and the new one attached in one brief transaction.
 */
export function swapPrimaryKey(spec: { table: string; name: string; from: string[]; to: string[] }): Step {
  const ensure = (columns: string[]) => async (db: Parameters<Step['up']>[0]) => {
    const current = await constraintInfo(db, spec.table, spec.name)
    if (current?.columns.join() === columns.join()) return
    const staging = `${spec.name}_next`
    if ((await indexInfo(db, staging))?.constraint) throw new Error(`index ${staging} already backs a constraint`)
    await buildIndexConcurrently(db, { table: spec.table, name: staging, columns, unique: true })
    await alterTable(db, spec.table, [
      sql`drop constraint if exists ${sql.id(spec.name)}`,
      sql`add constraint ${sql.id(spec.name)} primary key using index ${sql.id(staging)}`,
    ])
  }
  return { name: `primary key ${spec.table} (${spec.to.join(', ')})`, up: ensure(spec.to), down: ensure(spec.from) }
}
