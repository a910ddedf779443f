import { sql, type Kysely } from 'kysely'
import { withLockRetry } from '../online/lock-retry.ts'
import { remoteLockWait } from '../online/remote-lock-wait.ts'
import { inRun, progress, type RunContext } from '../online/run-context.ts'
import { withMigrationLock } from '../migrator/migration-lock.ts'
import { watchingRemoteWaits } from './remote-waits.ts'
import type { MigrationLogger } from '../migrator/migration-logger.ts'

/** A Citus command refused before changing anything: no citus extension, a schema not ready, an unknown tenant. */
export class DistributeRefused extends Error {
  /** Always `'DistributeRefused'`, so a log line or a check of `error.name` tells it apart. */
  override name = 'DistributeRefused'
}

/** A statement of distribute or undistribute failed on the server; the message carries Citus's DETAIL and HINT. */
export class DistributeFailed extends Error {
  /** Always `'DistributeFailed'`, so a log line or a check of `error.name` tells it apart. */
  override name = 'DistributeFailed'
}

/**
 * Runs one statement of distribute or undistribute, announced first (a run killed there is known by its last
 * line). An error of the server keeps what Citus said besides its message (its DETAIL and HINT
 * name the cause), and says that a rerun takes it from there.
 */
export async function step<T>(what: string, run: () => Promise<T>): Promise<T> {
  progress(`  ${what}`)
  try {
    return await run()
  } catch (caught) {
    const error = remoteLockWait(caught) ?? caught
    const e = error as Error & { detail?: string; hint?: string; code?: string }
    if (!e.code) throw error
    const said = [e.message, e.detail, e.hint && `hint: ${e.hint}`].filter(Boolean).join('; ')
    throw new DistributeFailed(`${what}: ${said.replace(/\s*\n\s*/g, ' ')} (what was done before it stays; run the command again once this is fixed, and it goes on from there)`, { cause: error })
  }
}

/**
 * Runs `fn` (a create_*_table, which copies the table's rows into its new shards) in one
 * transaction with the table's own triggers off, each put back as it was. The shards get the
 * triggers, and Citus's copy fires them there: audit_logs' stamp gave every copied row a new seq
 * and hash (the chain no longer verified), tenants' guard refused the copy of its rows. The
 * ALTER TABLE's lock keeps the app's writes out until the commit, so none is written unstamped.
 * The lock is asked for with the run's short lock timeout and retried (withLockRetry): the app's
 * requests queue behind it for at most that long, and a session that holds the table for good
 * ends the run with an error naming it instead of hanging it and every tenant's requests with it.
 */
export async function withoutTriggers<T>(conn: Kysely<any>, table: string | string[], fn: (trx: Kysely<any>) => Promise<T>): Promise<T> {
  const tables = typeof table === 'string' ? [table] : table
  // Several: a lock that is not to be had is named by the first (the one the app writes most).
  return withLockRetry(conn, tables[0]!, async (trx) => {
    const { rows } = await sql<{ table: string; name: string; enabled: string }>`select tgrelid::regclass::text as table, tgname as name, tgenabled as enabled
      from pg_catalog.pg_trigger where tgrelid = any(${tables}::regclass[]) and not tgisinternal and tgenabled <> 'D'
      order by array_position(${tables}::regclass[], tgrelid), 2`.execute(trx)
    for (const t of rows) await sql`alter table ${sql.raw(t.table)} disable trigger ${sql.id(t.name)}`.execute(trx)
    const result = await fn(trx)
    for (const t of rows) {
      const mode = t.enabled === 'A' ? sql`enable always` : t.enabled === 'R' ? sql`enable replica` : sql`enable`
      await sql`alter table ${sql.raw(t.table)} ${mode} trigger ${sql.id(t.name)}`.execute(trx)
    }
    return result
  })
}

export async function exists(db: Kysely<any>, table: string): Promise<boolean> {
  const { rows } = await sql<{ t: string | null }>`select pg_catalog.to_regclass(${table})::text as t`.execute(db)
  return rows[0]?.t != null
}

/** Distributed by hash (a Citus local table, which Citus makes of a table referencing a reference table, is not). */
export async function isDistributed(db: Kysely<any>, table: string): Promise<boolean> {
  const { rows } = await sql`select 1 from pg_dist_partition where logicalrelid = ${table}::regclass and partmethod = 'h'`.execute(db)
  return rows.length > 0
}

/** A reference table: a copy on every node. */
export async function isReference(db: Kysely<any>, table: string): Promise<boolean> {
  const { rows } = await sql`select 1 from pg_dist_partition where logicalrelid = ${table}::regclass and partmethod = 'n' and repmodel = 't'`.execute(db)
  return rows.length > 0
}

/** The run context of a Citus command: its logger and lock tuning (withLockRetry reads them). */
export function runContextOf(options: { logger?: MigrationLogger; lockTimeoutMs?: number; lockRetryBudgetMs?: number }): Partial<RunContext> {
  return {
    ...(options.logger ? { logger: options.logger } : {}),
    ...(options.lockTimeoutMs ? { lockTimeoutMs: options.lockTimeoutMs } : {}),
    ...(options.lockRetryBudgetMs ? { lockRetryBudgetMs: options.lockRetryBudgetMs } : {}),
  }
}

/**
 * Runs one Citus command of skills-db on one connection: refused with `noCitus` (nothing changed)
 * without the citus extension; else with the owner's all-tenants view, search_path public, Citus's
 * triggers on shards when asked and any other `settings`, holding the migration lock (never beside
 * a migration or another of these), and leaving the connection as it found it.
 */
export async function onCoordinator<T>(db: Kysely<any>, options: { logger?: MigrationLogger; lockTimeoutMs?: number; lockRetryBudgetMs?: number },
  { noCitus, unsafeTriggers = false, settings = {}, watchWorkers = false }: { noCitus: string; unsafeTriggers?: boolean; settings?: Record<string, string>; watchWorkers?: boolean },
  fn: (conn: Kysely<any>) => Promise<T>): Promise<T> {
  return inRun(runContextOf(options), () => db.connection().execute(async (conn) => {
    const { rows } = await sql<{ v: string | null }>`select extversion as v from pg_catalog.pg_extension where extname = 'citus'`.execute(conn)
    if (!rows[0]?.v) throw new DistributeRefused(noCitus)
    // client_connection_check_interval: a command killed (Ctrl-C, kill -9) mid-statement ends its
    // statement on the server within a second, and with it the locks it holds on the app's tables
    // (a newcomer's Ctrl-C of a hung isolate-tenant left its session holding them).
    const all = { 'skills_db.all_tenants': 'on', search_path: 'public', client_connection_check_interval: '1000', ...(unsafeTriggers ? { 'citus.enable_unsafe_triggers': 'on' } : {}), ...settings }
    for (const [name, value] of Object.entries(all)) await sql`select pg_catalog.set_config(${name}, ${value}, false)`.execute(conn)
    try {
      // watchWorkers: a wait of its statements on a worker ends like a lock timeout here (remote-waits.ts).
      return await withMigrationLock(conn, () => watchWorkers ? watchingRemoteWaits(db, conn, () => fn(conn)) : fn(conn))
    } finally {
      await sql`rollback`.execute(conn).catch(() => {})
      await sql`reset all`.execute(conn).catch(() => {})
    }
  }))
}

/** Whether this session's role is a superuser (some of what the Citus commands set needs one). */
export async function isSuperuser(db: Kysely<any>): Promise<boolean> {
  const { rows } = await sql<{ su: boolean }>`select rolsuper as su from pg_catalog.pg_roles where rolname = current_user`.execute(db)
  return rows[0]?.su === true
}
