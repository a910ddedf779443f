import { Kysely, PostgresDialect } from 'kysely'
import pg from 'pg'
import type { DB } from '../db-types.ts'
import { pipelinedPool } from './pipelined-pools.ts'
import { countingQueries } from './query-count.ts'
import { condemnableSessions } from './condemned-sessions.ts'
import { ConnectionError, describeConnectionError } from './connection-error.ts'
import { parseDatabaseUrl, type DatabaseTarget } from './database-url.ts'

/** How {@link createDb} and {@link openDb} set up the pool and what withTenant and recordAudit sign with; every option has a default. */
export interface CreateDbOptions {
  /** Pool size; the migrator needs one connection, an app instance usually 10. */
  max?: number
  /** `application_name` shown in pg_stat_activity, so operators can tell sessions apart. */
  applicationName?: string
  /** How long to wait for a new connection to the server before failing, in ms (default 10 000). */
  connectionTimeoutMillis?: number
  /**
   * The key withTenant signs the tenant context with (`<id>:<secret>`), one of those the migrator
   * was given in SKILLS_DB_TENANT_KEYS. Default: the SKILLS_DB_TENANT_KEY environment variable.
   */
  tenantKey?: string
  /**
   * The key recordAudit signs the audit chain with (`<id>:<secret>`), which the database never sees
   * (docs/security.md, "Audit log"). Default: the SKILLS_DB_AUDIT_KEY environment variable.
   */
  auditKey?: string
  /**
   * How long a statement of withTenant's transactions may wait for a lock, in ms (SET LOCAL
   * lock_timeout, sent with the tenant's entry: no extra round trip). A request of another tenant
   * that takes a table lock (SQL injected as the app role may: LOCK TABLE) then holds this
   * tenant's requests up for at most this long, each failing with lock_not_available instead of
   * waiting for the other's transaction to end. Default: the server's (none, on most).
   */
  lockTimeoutMs?: number
  /**
   * withTenant in fewer round trips (issue 18, migration 0019), the default: BEGIN, the tenant's
   * entry and fn's first statement in one round trip (one Sync), the clean-up and COMMIT in one
   * more, with the checks that come with it (a request whose fn ended or left its transaction
   * fails). Needs pg 8.15 or later. `false` sends each statement on its own, as before 0019 (5
   * round trips besides fn's): for a proxy that mishandles several messages sent before the first
   * is answered. On Citus withTenant enters one statement at a time either way.
   */
  pipelinedWithTenant?: boolean
  /**
   * Called with each NOTICE (or WARNING) the server sends on the pool's connections: a RAISE
   * NOTICE of a function, or Citus's `citus.log_remote_commands`, which says where each statement
   * of a distributed query went.
   */
  onNotice?: (notice: ServerNotice) => void
}

/** A NOTICE or WARNING of the server, as pg hands it over. */
export interface ServerNotice {
  /** `NOTICE`, `WARNING`, … as the server names it. */
  severity?: string
  /** The SQLSTATE, e.g. `00000` for a plain RAISE NOTICE. */
  code?: string
  /** The notice's text. */
  message?: string
  /** The server's DETAIL line, when it sent one. */
  detail?: string
  /** The server's HINT line, when it sent one. */
  hint?: string
}

/**
 * The one place that turns a DATABASE_URL into a pool and a typed Kysely instance.
 * Nothing is contacted until the first query; call {@link openDb} to fail fast instead.
 *
 * @example
 * // The app's pool, as the app role (APP_DATABASE_URL; DATABASE_URL is the migrator's, the owner's).
 * const db = createDb(process.env.APP_DATABASE_URL!)
 * // Every query of a tenant's inside withTenant: outside it, row security shows the app role nothing.
 * const skill = await withTenant(db, tenantId, (trx) => trx.selectFrom('skills').selectAll().where('slug', '=', 'x').executeTakeFirst())
 */
export function createDb<T = DB>(url: string, options: CreateDbOptions = {}): Kysely<T> {
  const target = parseDatabaseUrl(url)
  const pipelined = options.pipelinedWithTenant ?? true
  const pool = new pg.Pool({
    connectionString: url,
    max: options.max ?? 10,
    application_name: options.applicationName ?? 'skills-db',
    connectionTimeoutMillis: options.connectionTimeoutMillis ?? 10_000,
  })
  // A client dying (server restart, pg_terminate_backend) must not crash the process: the query
  // in flight fails with the error anyway, and the pool replaces the client.
  pool.on('error', () => {})
  pool.on('connect', (client) => {
    client.on('error', () => {})
    if (pipelined) countingQueries(client)
    if (options.onNotice) client.on('notice', options.onNotice)
  })
  const condemn = condemnableSessions(pool)
  const dialect = new PostgresDialect({ pool })
  const db = new Kysely<T>({ dialect })
  // withTenant checks its connections out of the pool itself, and Kysely ends the pool on destroy()
  // only if it checked one out first: a pool only withTenant used stayed open (a newcomer's script
  // waited 10 s for the idle timeout after destroy()). (Not for an instance derived by
  // withSchema() or withPlugin(), whose destroy() is Kysely's alone: destroy this one.)
  const destroy = db.destroy.bind(db)
  db.destroy = async (...args: Parameters<typeof destroy>) => {
    await destroy(...args)
    if (!pool.ending) await pool.end()
  }
  targets.set(db, target)
  if (pipelined) pipelinedPool(db, pool, dialect)
  condemners.set(db, condemn)
  if (options.tenantKey !== undefined) tenantKeys.set(db, options.tenantKey)
  if (options.auditKey !== undefined) auditKeys.set(db, options.auditKey)
  if (options.lockTimeoutMs !== undefined) {
    if (!Number.isInteger(options.lockTimeoutMs) || options.lockTimeoutMs <= 0) throw new Error(`createDb option lockTimeoutMs must be a positive whole number of milliseconds, not ${options.lockTimeoutMs}`)
    lockTimeouts.set(db, options.lockTimeoutMs)
  }
  return db
}

const targets = new WeakMap<object, DatabaseTarget>()
const condemners = new WeakMap<object, (pid: number) => void>()
const tenantKeys = new WeakMap<object, string>()
const auditKeys = new WeakMap<object, string>()
const lockTimeouts = new WeakMap<object, number>()

/**
 * Like {@link createDb}, but proves the server answers; throws {@link ConnectionError} with a one-line reason.
 *
 * @example
 * const db = await openDb(process.env.DATABASE_URL!, { applicationName: 'skills-web' })
 */
export async function openDb<T = DB>(url: string, options: CreateDbOptions = {}): Promise<Kysely<T>> {
  const db = createDb<T>(url, options)
  try {
    await db.connection().execute(async (conn) => {
      await conn.selectNoFrom((eb) => eb.val(1).as('one')).execute()
    })
  } catch (error) {
    await db.destroy().catch(() => {})
    throw toConnectionError(error, parseDatabaseUrl(url))
  }
  return db
}

export function toConnectionError(error: unknown, target: DatabaseTarget): Error {
  const reason = describeConnectionError(error, target)
  return reason ? new ConnectionError(reason) : (error as Error)
}

/**
 * Closes the connection of backend `pid` when it is next released, instead of reusing it (see
 * condemned-sessions.ts). False when `db` was not made by {@link createDb}, which cannot be done then.
 */
export function condemnSession(db: object, pid: number): boolean {
  const condemn = condemners.get(db)
  condemn?.(pid)
  return condemn !== undefined
}

/** The tenant key a Kysely instance was made with ({@link CreateDbOptions.tenantKey}), if any. */
export function tenantKeyOf(db: object): string | undefined {
  return tenantKeys.get(db)
}

/** The lock timeout of withTenant's transactions ({@link CreateDbOptions.lockTimeoutMs}), if any. */
export function lockTimeoutOf(db: object): number | undefined {
  return lockTimeouts.get(db)
}

/** The audit key a Kysely instance was made with ({@link CreateDbOptions.auditKey}), if any. */
export function auditKeyOf(db: object): string | undefined {
  return auditKeys.get(db)
}

/** The target a Kysely instance made by {@link createDb} points at (for error messages). */
export function targetOf(db: object): DatabaseTarget | undefined {
  return targets.get(db)
}
