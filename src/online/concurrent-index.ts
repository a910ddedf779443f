import { sql, type Kysely } from 'kysely'
import { ident, indexColumn, indexInfo } from './catalog.ts'
import { sessionLabel } from './lock-holders.ts'
import { LockRetryExhausted } from './lock-retry.ts'
import { progress, run } from './run-context.ts'
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
  /**
   * An index that holds no row (`WHERE false`): it only takes the name, so that a later step that
   * builds an index of that name finds it built. Costs nothing to keep; never serves a query.
   */
  empty?: true
}

/**
 * Builds an index CONCURRENTLY: reads and writes go on during the build. An INVALID index left by
 * an interrupted build is dropped and built again. Runs outside any transaction. The build waits
 * for the transactions older than it, but nothing waits for the build: it waits in one go, for up
 * to the run's retry budget (a session that never ends its transaction would hold it forever),
 * then stops and names the sessions it waited for.
 */
export async function buildIndexConcurrently(db: Kysely<any>, spec: IndexSpec): Promise<void> {
  const existing = await indexInfo(db, spec.name)
  if (existing?.valid) return
  await withinRetryBudget(db, spec.table, `index ${spec.name}`, async () => {
    if (existing) {
      progress(`  dropping INVALID index ${spec.name} left by an interrupted build`)
      await sql`drop index concurrently if exists ${sql.id(spec.name)}`.execute(db)
    }
    const columns = spec.collate ? sql.join(spec.columns.map((c) => sql`${sql.id(ident(c))} collate ${sql.id(...qualified(spec.collate!))}`)) : sql.raw(spec.columns.map(indexColumn).join(', '))
    await sql`create ${sql.raw(spec.unique ? 'unique ' : '')}index concurrently ${sql.id(spec.name)}
      on ${sql.table(spec.table)} (${columns})${spec.empty ? sql` where false` : sql``}`.execute(db)
  })
}

/** `schema.name` as its two identifiers, each checked. */
function qualified(name: string): [string, string] {
  const [schema, object, extra] = name.split('.')
  if (!schema || !object || extra !== undefined) throw new Error(`"${name}" is not a schema-qualified name`)
  return [ident(schema), ident(object)]
}

export async function dropIndexConcurrently(db: Kysely<any>, name: string): Promise<void> {
  const existing = await indexInfo(db, name)
  if (!existing) return
  await withinRetryBudget(db, existing.table, `dropping index ${name}`, () => sql`drop index concurrently if exists ${sql.id(name)}`.execute(db))
}

/**
 * CONCURRENTLY takes only locks the app never waits for, so it waits in one go (for autovacuum, for
 * the transactions in flight) rather than in short tries, for up to the run's retry budget.
 */
async function withinRetryBudget<T>(db: Kysely<any>, table: string, what: string, fn: () => Promise<T>): Promise<T> {
  const budget = run().lockRetryBudgetMs
  const { rows } = await sql<{ v: string }>`select pg_catalog.current_setting('lock_timeout') as v, pg_catalog.set_config('lock_timeout', ${`${budget}ms`}::text, false)`.execute(db)
  const started = new Date()
  try {
    return await fn()
  } catch (error) {
    if ((error as { code?: string }).code !== '55P03') throw error
    throw new LockRetryExhausted(`gave up after ${Math.round(budget / 1000)} s on ${what}: it waits for the transactions older than it to end, and these did not: ` +
      `${await olderTransactions(db, table, started)}; end them or rerun the migration later (it resumes where it stopped)`)
  } finally {
    await sql`select pg_catalog.set_config('lock_timeout', ${rows[0]!.v}::text, false)`.execute(db).catch(() => {})
  }
}

/**
 * The sessions of this database in a transaction (holding their transaction's own lock, which any
 * role sees) begun before `since` where it shows, or holding a lock on `table`.
 */
async function olderTransactions(db: Kysely<any>, table: string, since: Date): Promise<string> {
  const { rows } = await sql<{ who: string | null }>`
    select string_agg(${sessionLabel(sql`coalesce(', in a transaction since ' || to_char(a.xact_start, 'HH24:MI:SS'), ', in a transaction')`)}, '; ' order by a.pid) as who
    from pg_catalog.pg_stat_activity a
    where a.datname = pg_catalog.current_database() and a.pid <> pg_catalog.pg_backend_pid()
      and ((exists (select 1 from pg_catalog.pg_locks l where l.pid = a.pid and l.locktype = 'virtualxid' and l.granted) and coalesce(a.xact_start < ${since}, true))
        or exists (select 1 from pg_catalog.pg_locks l where l.pid = a.pid and l.granted and l.relation = pg_catalog.to_regclass(${table}::text)))`.execute(db)
  return rows[0]?.who ?? 'sessions that have since finished'
}

/** A plain index, built and dropped CONCURRENTLY. */
export function index(spec: IndexSpec): Step {
  return {
    name: `index ${spec.name}`,
    up: (db) => buildIndexConcurrently(db, spec),
    down: (db) => dropIndexConcurrently(db, spec.name),
  }
}
