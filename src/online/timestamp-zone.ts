import { sql, type Kysely } from 'kysely'
import { ident } from './catalog.ts'
import { buildIndexConcurrently, dropIndexConcurrently, type IndexSpec } from './concurrent-index.ts'
import { withLockRetry } from './lock-retry.ts'
import type { Step } from './step.ts'

type Kind = 'timestamptz' | 'timestamp'
const TYPE_NAME: Record<Kind, string> = { timestamptz: 'timestamp with time zone', timestamp: 'timestamp without time zone' }

async function typesOf(db: Kysely<any>, table: string, columns: readonly string[]): Promise<Record<string, string>> {
  const { rows } = await sql<{ column: string; type: string }>`
    select a.attname as column, pg_catalog.format_type(a.atttypid, a.atttypmod) as type from pg_catalog.pg_attribute a
    where a.attrelid = pg_catalog.to_regclass(${table}::text) and a.attname = any(${[...columns]}::text[]) and not a.attisdropped`.execute(db)
  return Object.fromEntries(rows.map((r) => [r.column, r.type]))
}

/**
 * `timestamp` columns become `timestamptz`, as a catalog change: with the session's TimeZone UTC,
 * PostgreSQL (12+) reads the stored values as UTC and rewrites no row. It would still rebuild every
 * index on the columns, under the table's exclusive lock; so those indexes (`indexes`) are dropped
 * CONCURRENTLY first and built again CONCURRENTLY after. Queries that used them scan without them
 * for the seconds of the rebuild: give the migration an index to fall back on meanwhile. `down` is
 * the same the other way. Whether the values really are UTC is the caller's to establish.
 */
export function timestampsWithTimeZone(table: string, columns: readonly string[], { indexes = [] }: { indexes?: IndexSpec[] } = {}): Step {
  for (const c of columns) ident(c)
  const convert = (to: Kind) => async (db: Kysely<any>) => {
    const types = await typesOf(db, table, columns)
    const pending = columns.filter((c) => types[c] !== TYPE_NAME[to])
    if (pending.length > 0) {
      for (const index of indexes) await dropIndexConcurrently(db, index.name)
      await withLockRetry(db, table, async (trx) => {
        await sql`select pg_catalog.set_config('TimeZone', 'UTC', true)`.execute(trx)
        await sql`alter table ${sql.table(table)} ${sql.join(pending.map((c) => sql`alter column ${sql.id(c)} type ${sql.raw(to)}`))}`.execute(trx)
      })
    }
    for (const index of indexes) await buildIndexConcurrently(db, index)
  }
  return { name: `${table} (${columns.join(', ')}) as timestamptz`, up: convert('timestamptz'), down: convert('timestamp') }
}
