import { sql, type Kysely } from 'kysely'
import { Migrator, NO_MIGRATIONS, type MigrationResultSet } from 'kysely/migration'
import { describeConnectionError } from '../connection/connection-error.ts'
import { targetOf } from '../connection/create-db.ts'
import { ALLOW_DATA_LOSS_SETTING } from '../online/data-loss-guard.ts'
import { DEFAULTS, SETTINGS } from '../online/migration-settings.ts'
import { setProgressLogger } from '../online/progress.ts'
import { APP_ROLE_SETTING } from '../tenancy/app-role.ts'
import { adoptLegacySchema, SchemaMismatchError } from './legacy-adoption.ts'
import { withMigrationLock } from './migration-lock.ts'
import { silentLogger, type MigrationLogger } from './migration-logger.ts'
import { timedMigrationProvider } from './migration-provider.ts'
import { MIGRATION_SCHEMA, MIGRATION_TABLE, readAppliedMigrations } from './migration-table.ts'

export interface MigrateOptions {
  logger?: MigrationLogger
  /** Role the app connects as once multi-tenant; created when missing. Default `app_user`. */
  appRole?: string
  /** Let a `down` drop data it cannot restore (CLI: `--force`). */
  allowDataLoss?: boolean
  /** Another migrations folder (tests). */
  migrationsDir?: string
  /** How long one DDL statement may wait for its lock (default 50 ms): the most the app is held up. */
  lockTimeoutMs?: number
  /** How long a step keeps retrying a busy lock before it stops and names the blocker (default 120 s). */
  lockRetryBudgetMs?: number
  /** Rows per backfill transaction (default 5000). */
  batchSize?: number
  /** Memory for each index build and validation (default 256MB; builds run one at a time). */
  maintenanceWorkMem?: string
}

export interface MigrationStep {
  name: string
  direction: 'Up' | 'Down'
}

/** What a run did. Never thrown: callers decide what an error means for them. */
export type MigrationOutcome =
  | { status: 'applied'; steps: MigrationStep[]; adopted: boolean }
  | { status: 'up-to-date'; steps: []; adopted: boolean }
  | { status: 'error'; steps: MigrationStep[]; error: { message: string; migration?: string; details?: string[] } }

type Target = { kind: 'latest' } | { kind: 'up' } | { kind: 'down' } | { kind: 'to'; name: string } | { kind: 'all-down' }

/**
 * Brings the database to the newest migration; safe to call from every app instance at boot:
 * exactly one applies each migration, the others wait and then return `up-to-date`.
 *
 * @example
 * const outcome = await migrateToLatest(db, { logger: console })
 * if (outcome.status === 'error') throw new Error(`${outcome.error.migration}: ${outcome.error.message}`)
 */
export function migrateToLatest(db: Kysely<any>, options: MigrateOptions = {}): Promise<MigrationOutcome> {
  return run(db, { kind: 'latest' }, options)
}

/** Applies the next pending migration. */
export function migrateUp(db: Kysely<any>, options: MigrateOptions = {}): Promise<MigrationOutcome> {
  return run(db, { kind: 'up' }, options)
}

/** Rolls back one migration, down to (not including) `to`, or everything with `to: 'all'`. */
export function migrateDown(
  db: Kysely<any>,
  options: MigrateOptions & { to?: string } = {},
): Promise<MigrationOutcome> {
  const target: Target = options.to === undefined ? { kind: 'down' } : options.to === 'all' ? { kind: 'all-down' } : { kind: 'to', name: options.to }
  return run(db, target, options)
}

async function run(db: Kysely<any>, target: Target, options: MigrateOptions): Promise<MigrationOutcome> {
  const logger = options.logger ?? silentLogger
  const running: { name?: string } = {}
  try {
    return await db.connection().execute(async (conn) => {
      await sql`select set_config(${ALLOW_DATA_LOSS_SETTING}, ${options.allowDataLoss ? 'on' : 'off'}, false),
                       set_config(${APP_ROLE_SETTING}, ${options.appRole ?? ''}, false),
                       set_config('application_name', 'skills-db migrator', false),
                       set_config('maintenance_work_mem', ${options.maintenanceWorkMem ?? '256MB'}, false),
                       set_config('lock_timeout', ${`${options.lockTimeoutMs ?? DEFAULTS.lockTimeoutMs}ms`}, false),
                       -- a server-wide statement_timeout must not cut a long validation or index build short
                       set_config('statement_timeout', '0', false),
                       set_config(${SETTINGS.lockTimeoutMs}, ${String(options.lockTimeoutMs ?? '')}, false),
                       set_config(${SETTINGS.lockRetryBudgetMs}, ${String(options.lockRetryBudgetMs ?? '')}, false),
                       set_config(${SETTINGS.batchSize}, ${String(options.batchSize ?? '')}, false)`.execute(conn)
      try {
        return await withMigrationLock(conn, logger, async () => {
          // A process-wide hook for the migrations, installed only while this run holds the lock.
          setProgressLogger(logger)
          try {
            return await runLocked(conn, target, { ...options, db, running }, logger)
          } finally {
            setProgressLogger(undefined)
          }
        })
      } finally {
        // The connection goes back to the app's pool: leave nothing of ours on it (RESET ALL
        // returns every setting to what the session started with).
        await sql`reset all`.execute(conn).catch(() => {})
      }
    })
  } catch (error) {
    const details = error instanceof SchemaMismatchError ? { details: error.differences } : {}
    const migration = running.name ? { migration: running.name } : {}
    return { status: 'error', steps: [], error: { message: describe(error, db), ...migration, ...details } }
  }
}

async function runLocked(conn: Kysely<any>, target: Target, options: MigrateOptions & { db?: Kysely<any>; running?: { name?: string } }, logger: MigrationLogger): Promise<MigrationOutcome> {
  await preflight(conn)
  const adopted = target.kind === 'latest' || target.kind === 'up' ? await adoptLegacySchema(conn, logger) : false
  const migrator = new Migrator({
    db: conn,
    provider: timedMigrationProvider(logger, options.migrationsDir, options.running),
    migrationTableSchema: MIGRATION_SCHEMA,
    migrationTableName: MIGRATION_TABLE,
    // Each migration manages its own short transactions: one transaction around everything would
    // hold locks on every table at once, and CREATE INDEX CONCURRENTLY cannot run inside one.
    disableTransactions: true,
  })
  let resultSet: MigrationResultSet
  switch (target.kind) {
    case 'latest': resultSet = await migrator.migrateToLatest(); break
    case 'up': resultSet = await migrator.migrateUp(); break
    case 'down':
    case 'all-down':
    case 'to': {
      const applied = await readAppliedMigrations(conn)
      if (applied.length === 0) return fail('nothing to roll back: no migration is applied')
      if (target.kind === 'to' && !applied.some((m) => m.name === target.name)) {
        return fail(`unknown migration "${target.name}" for --to; applied: ${applied.map((m) => m.name).join(', ')}`)
      }
      resultSet =
        target.kind === 'down' ? await migrator.migrateDown()
        : target.kind === 'all-down' ? await migrator.migrateTo(NO_MIGRATIONS)
        : await migrator.migrateTo(target.name)
    }
  }
  const steps = (resultSet.results ?? [])
    .filter((r) => r.status === 'Success')
    .map((r) => ({ name: r.migrationName, direction: r.direction }))
  if (resultSet.error) {
    // Without results (the lock release failed too, e.g. the connection died) the running migration says it.
    const failed = resultSet.results?.find((r) => r.status === 'Error')?.migrationName ?? options.running?.name
    return { status: 'error', steps, error: { message: describe(resultSet.error, options.db ?? conn), ...(failed ? { migration: failed } : {}) } }
  }
  if (steps.length === 0) {
    if (target.kind !== 'latest' && target.kind !== 'up') return fail('nothing to roll back')
    return { status: 'up-to-date', steps: [], adopted }
  }
  return { status: 'applied', steps, adopted }
}

/**
 * Refuses, before anything is changed, a read-only target and a role that row security would
 * filter: hidden rows would make the migrations' own checks (anything left to backfill? would
 * this down merge tenants?) answer wrongly. One round trip: every app boot pays it.
 */
async function preflight(conn: Kysely<any>): Promise<void> {
  const { rows } = await sql<{ ro: string; standby: boolean; seesAll: boolean; me: string }>`
    select current_setting('transaction_read_only') as ro, pg_is_in_recovery() as standby, current_user as me,
      (select rolsuper or rolbypassrls from pg_roles where rolname = current_user) as "seesAll"`.execute(conn)
  const r = rows[0]!
  if (r.ro === 'on' || r.standby) {
    throw new Error(`the database is read-only (${r.standby ? 'a standby' : 'default_transaction_read_only is on'}): nothing was changed; point DATABASE_URL at the writable primary`)
  }
  if (!r.seesAll) {
    throw new Error(`migrations must run as a superuser or a role with BYPASSRLS, and ${r.me} is neither (row security would hide rows from the migration's own checks); use the owner's URL`)
  }
}

function fail(message: string): MigrationOutcome {
  return { status: 'error', steps: [], error: { message } }
}

function describe(error: unknown, db: object): string {
  const target = targetOf(db)
  const reason = target ? describeConnectionError(error, target) : undefined
  if (reason) return reason
  const message = error instanceof Error ? error.message : String(error)
  const code = (error as { code?: string }).code
  if (code === '57P01' || code === '57P02' || /Connection terminated|connection terminated|ECONNRESET|connection error and is not queryable/.test(message)) {
    return `lost the connection to PostgreSQL during the migration (${message.split('\n')[0]}); every step resumes where it stopped: run migrate:latest again`
  }
  const missing = /previously executed migration (\S+) is missing/.exec(message)
  if (missing) {
    return `the database records migration ${missing[1]} but this code does not have it: deploy the code that has it, or roll it back with that code first`
  }
  return message.split('\n')[0]!
}
