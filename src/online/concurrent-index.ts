import { sql, type Kysely } from 'kysely'
import { ident, indexColumn, indexInfo } from './catalog.ts'
import { progress } from './run-context.ts'
import type { Step } from './step.ts'

export interface IndexSpec {
  table: string
  name: string
  /** Column names; an index's may end in ` desc`. */
  columns: string[]
  unique?: boolean
  /**
   * A collation every column is indexed in (schema-qualified, e.g. `skills_db.internal`). An index
   * serves a query only in its own collation, so one in a collation the app role cannot name
   * serves constraints, ON CONFLICT and the owner's own lookups, never the app role's queries.
   */
  collate?: string
}

/**
 * Builds an index CONCURRENTLY: reads and writes go on during the build. An INVALID index left by
 * an interrupted build is dropped and built again. Runs outside any transaction, with no lock
 * timeout: the build waits for older transactions, but nothing waits for the build.
 */
export async function buildIndexConcurrently(db: Kysely<any>, spec: IndexSpec): Promise<void> {
  const existing = await indexInfo(db, spec.name)
  if (existing?.valid) return
  await withoutLockTimeout(db, async () => {
    if (existing) {
      progress(`  dropping INVALID index ${spec.name} left by an interrupted build`)
      await sql`drop index concurrently if exists ${sql.id(spec.name)}`.execute(db)
    }
    const columns = spec.collate ? sql.join(spec.columns.map((c) => sql`${sql.id(ident(c))} collate ${sql.id(...qualified(spec.collate!))}`)) : sql.raw(spec.columns.map(indexColumn).join(', '))
    await sql`create ${sql.raw(spec.unique ? 'unique ' : '')}index concurrently ${sql.id(spec.name)}
      on ${sql.table(spec.table)} (${columns})`.execute(db)
  })
}

/** `schema.name` as its two identifiers, each checked. */
function qualified(name: string): [string, string] {
  const [schema, object, extra] = name.split('.')
  if (!schema || !object || extra !== undefined) throw new Error(`"${name}" is not a schema-qualified name`)
  return [ident(schema), ident(object)]
}

export async function dropIndexConcurrently(db: Kysely<any>, name: string): Promise<void> {
  if (!(await indexInfo(db, name))) return
  await withoutLockTimeout(db, () => sql`drop index concurrently if exists ${sql.id(name)}`.execute(db))
}

/** CONCURRENTLY takes only locks the app never waits for, so it may wait (e.g. for autovacuum) as long as it must. */
async function withoutLockTimeout<T>(db: Kysely<any>, fn: () => Promise<T>): Promise<T> {
  const { rows } = await sql<{ v: string }>`select pg_catalog.current_setting('lock_timeout') as v, pg_catalog.set_config('lock_timeout', '0', false)`.execute(db)
  try {
    return await fn()
  } finally {
    await sql`select pg_catalog.set_config('lock_timeout', ${rows[0]!.v}::text, false)`.execute(db).catch(() => {})
  }
}

/** A plain index, built and dropped CONCURRENTLY. */
export function index(spec: IndexSpec): Step {
  return {
    name: `index ${spec.name}`,
    up: (db) => buildIndexConcurrently(db, spec),
    down: (db) => dropIndexConcurrently(db, spec.name),
  }
}
