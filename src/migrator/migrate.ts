import { sql, type Kysely } from 'kysely'
import { Migrator, NO_MIGRATIONS, type MigrationResultSet } from 'kysely/migration'
import { onlyCitusOwnSessions } from '../citus/own-sessions.ts'
import { targetOf } from '../connection/create-db.ts'
import type { DatabaseTarget } from '../connection/database-url.ts'
import { oldAppRoles } from '../online/old-app-roles.ts'
import { DEFAULT_RUN, inRun, progress, type RunContext } from '../online/run-context.ts'
import { adoptLegacySchema } from './legacy-adoption.ts'
import { MigrationError, toMigrationError } from './migration-error.ts'
import { withMigrationLock } from './migration-lock.ts'
import { lockHolders, PROJECT_TABLES, STRONG_LOCKS } from '../online/lock-holders.ts'
import { LockRetryExhausted } from '../online/lock-retry.ts'
import { silentLogger, type MigrationLogger } from './migration-logger.ts'
import { skillsDbMigrationProvider, type RunJournal } from './migration-provider.ts'
import { furthest, PHASE_COMMAND, phaseRank, reachedPhase, type Phase } from './migration-phases.ts'
import { MIGRATION_SCHEMA, MIGRATION_TABLE, readAppliedMigrations } from './migration-table.ts'
import { preflight } from './preflight.ts'
import { storedTenantKeyIds, storeTenantKeys, tenantKeysOption } from './tenant-context-keys.ts'

/** How a run of the migrator goes: who it reports to, which roles and keys it sets up, what it may do. Every option has a default. */
export interface MigrateOptions {
  /** Where the run reports its progress, a line at a time (`console` will do); default: nowhere. */
  logger?: MigrationLogger
  /** Role the app connects as once multi-tenant; created when missing. Default `app_user`. */
  appRole?: string
  /**
   * Roles the single-tenant app connects as (or will, instead of a superuser) while it keeps
   * running: created when missing, and confined to the default tenant, like the tables' owner and
   * every role already granted access to the tables. CLI: `--old-app-role`.
   */
  oldAppRoles?: string[]
  /** Let a `down` drop data it cannot restore. */
  allowDataLoss?: boolean
  /** Another migrations folder (tests). */
  migrationsDir?: string
  /** How long one DDL statement may wait for its lock (default 50 ms): the most the app is held up. */
  lockTimeoutMs?: number
  /** How long a step keeps retrying a busy lock before it stops and names the blocker (default 120 s). */
  lockRetryBudgetMs?: number
  /** Rows per backfill transaction (default 5000). */
  batchSize?: number
  /**
   * The keys withTenant may sign the tenant context with, `<id>:<secret>`: one, or two while
   * rotating (CLI: SKILLS_DB_TENANT_KEYS, comma-separated). After `latest` and `up` the database
   * holds exactly these; when absent, it keeps what it holds.
   */
  tenantKeys?: string[]
  /**
   * contract: go ahead although sessions of the old app's roles (or unconfined ones) are connected;
   * open: although superuser or BYPASSRLS sessions (which may be the old app) are connected.
   */
  allowOldAppSessions?: boolean
  /** contract: the timestamp columns hold UTC, whatever the server's TimeZone says. */
  timestampsAreUtc?: boolean
}

/** One migration a run applied or rolled back. */
export interface MigrationStep {
  /** The migration's name: its file name without the extension (`0020_tenant_lifecycle`). */
  name: string
  /** `Up` when it was applied, `Down` when it was rolled back. */
  direction: 'Up' | 'Down'
  /** When it started, and how long it took. */
  startedAt: Date
  /** How long it took, in ms. */
  durationMs: number
}

/**
 * What a run did. Never thrown: callers decide what an error means for them. `waiting` lists the
 * pending migrations of the phases the operator has not reached yet (`open`, `contract`), which
 * this run left for their commands.
 */
export type MigrationOutcome =
  | {
    /** The run applied (or rolled back) one migration or more. */
    status: 'applied'
    /** What it applied or rolled back, in order. */
    steps: MigrationStep[]
    /** True when the database was the single-tenant app's, without history, and was recorded at the baseline (0001) first. */
    adopted: boolean
    /** The pending migrations of a phase not reached yet, left for `migrateOpen` or `migrateContract`; empty after a rollback. */
    waiting: string[]
  }
  | {
    /** There was nothing to apply (another instance may just have applied it). */
    status: 'up-to-date'
    /** Always empty. */
    steps: []
    /** As for `applied` (when true, the adoption is all this run did). */
    adopted: boolean
    /** As for `applied`. */
    waiting: string[]
  }
  | {
    /** The run failed; what it completed before, it keeps. */
    status: 'error'
    /** What it applied or rolled back before the error. */
    steps: MigrationStep[]
    /** What went wrong, classified, with the original as its `cause`. */
    error: MigrationError
  }

type Target =
  | { kind: 'latest' } | { kind: 'up' } | { kind: 'down' } | { kind: 'all-down' }
  /** down to `name` (it stays applied) */
  | { kind: 'to'; name: string }
  /** to `name`, up or down, as Kysely's migrateTo: for kysely-ctl (skills-db-migrator.ts) */
  | { kind: 'move'; name: string }
  /** every pending migration up to the open phase's */
  | { kind: 'open' }
  /** every pending migration, the contract phase's included */
  | { kind: 'contract' }

/**
 * Brings the database to the newest migration; safe to call from every app instance at boot:
 * exactly one applies each migration, the others wait and then return `up-to-date`.
 *
 * @example
 * const outcome = await migrateToLatest(db, { logger: console })
 * if (outcome.status === 'error') throw outcome.error // a MigrationError: kind, migration, message, cause
 */
export function migrateToLatest(db: Kysely<any>, options: MigrateOptions = {}): Promise<MigrationOutcome> {
  return run(db, { kind: 'latest' }, options)
}

/**
 * The open phase, for the operator before a second tenant is created: applies the pending
 * migrations of the expand and open phases. The single-tenant app's global keys and indexes go, so
 * it must run on a confined role (not a superuser or BYPASSRLS one): refuses while such sessions
 * are connected, unless `allowOldAppSessions`.
 *
 * @example
 * const outcome = await migrateOpen(db, { logger: console, oldAppRoles: ['legacy_app'] })
 * if (outcome.status === 'error') console.error(`${outcome.error.kind}: ${outcome.error.message}`)
 */
export function migrateOpen(db: Kysely<any>, options: MigrateOptions = {}): Promise<MigrationOutcome> {
  return run(db, { kind: 'open' }, options)
}

/**
 * The contract phase, for the operator once the single-tenant app is retired: applies every
 * pending migration, those that `migrateToLatest` leaves waiting included. Refuses while sessions
 * of the old app's roles are connected, unless `allowOldAppSessions`.
 *
 * @example
 * const outcome = await migrateContract(db, { logger: console })
 * if (outcome.status === 'error' && outcome.error.kind === 'old-app-sessions') console.error('stop the old app first')
 */
export function migrateContract(db: Kysely<any>, options: MigrateOptions = {}): Promise<MigrationOutcome> {
  return run(db, { kind: 'contract' }, options)
}

/**
 * Applies the next pending migration (not one of the contract phase).
 *
 * @example
 * const outcome = await migrateUp(db)
 * if (outcome.status === 'applied') console.log(`applied ${outcome.steps[0]?.name}`)
 */
export function migrateUp(db: Kysely<any>, options: MigrateOptions = {}): Promise<MigrationOutcome> {
  return run(db, { kind: 'up' }, options)
}

/**
 * Brings the database to exactly `name`: applies the migrations up to it, or rolls back those after
 * it, as Kysely's `migrateTo` does. With `'all'`, rolls back everything.
 *
 * @example
 * await migrateTo(db, '0019_tenant_context_per_session_challenge', { allowDataLoss: false })
 */
export function migrateTo(db: Kysely<any>, name: string, options: MigrateOptions = {}): Promise<MigrationOutcome> {
  return run(db, name === 'all' ? { kind: 'all-down' } : { kind: 'move', name }, options)
}

/**
 * Rolls back one migration, down to (not including) `to`, or everything with `to: 'all'`.
 *
 * @example
 * const outcome = await migrateDown(db, { to: '0019_tenant_context_per_session_challenge' })
 * if (outcome.status === 'error' && outcome.error.kind === 'data-loss') console.error(outcome.error.message)
 */
export function migrateDown(
  db: Kysely<any>,
  options: MigrateOptions & { to?: string } = {},
): Promise<MigrationOutcome> {
  const target: Target = options.to === undefined ? { kind: 'down' } : options.to === 'all' ? { kind: 'all-down' } : { kind: 'to', name: options.to }
  return run(db, target, options)
}

/** Whether the run applies migrations (and so adopts a legacy schema and stores tenant keys) rather than rolling back. */
const upward = (target: Target) => target.kind === 'latest' || target.kind === 'up' || target.kind === 'move' || target.kind === 'open' || target.kind === 'contract'

/** The furthest phase a run may apply: where the database is, or the phase the operator asked for. */
function reach(target: Target, reached: Phase): Phase {
  if (target.kind === 'contract') return 'contract'
  if (target.kind === 'open') return furthest(reached, 'open')
  return reached
}

/** Index builds and validations run one at a time: each may use this much memory. */
const MAINTENANCE_WORK_MEM = '256MB'

async function run(db: Kysely<any>, target: Target, options: MigrateOptions): Promise<MigrationOutcome> {
  const logger = options.logger ?? silentLogger
  const journal: RunJournal = { timings: new Map() }
  const lockTimeoutMs = options.lockTimeoutMs ?? DEFAULT_RUN.lockTimeoutMs
  // Everything the migrations and their building blocks may ask about this run (src/online/run-context.ts).
  const context: RunContext = {
    logger,
    ...(options.appRole ? { appRole: options.appRole } : {}),
    oldAppRoles: options.oldAppRoles ?? [],
    allowDataLoss: options.allowDataLoss === true,
    allowOldAppSessions: options.allowOldAppSessions === true,
    timestampsAreUtc: options.timestampsAreUtc === true,
    lockTimeoutMs,
    lockRetryBudgetMs: options.lockRetryBudgetMs ?? DEFAULT_RUN.lockRetryBudgetMs,
    batchSize: options.batchSize ?? DEFAULT_RUN.batchSize,
    sessionLockTimeoutMs: lockTimeoutMs,
  }
  try {
    const keys = tenantKeysOption(options.tenantKeys)
    return await inRun(context, () => db.connection().execute(async (conn) => {
      await sql`select -- Pinned: no "$user" schema. pg_catalog is searched before it, implicitly (listing it
                       -- would make it where CREATE puts objects), and functions never resolve in pg_temp.
                       -- What a lookalike in public could still win by argument types is called qualified
                       -- and cast; 0005 also takes CREATE on public away from PUBLIC.
                       pg_catalog.set_config('search_path', 'public', false),
                       -- The policies of 0005/0006 let the owner see every row while this is on, so the
                       -- migrations' own checks need no superuser. Other roles gain nothing by setting it.
                       pg_catalog.set_config('skills_db.all_tenants', 'on', false),
                       pg_catalog.set_config('application_name', 'skills-db migrator', false),
                       pg_catalog.set_config('maintenance_work_mem', ${MAINTENANCE_WORK_MEM}::text, false),
                       pg_catalog.set_config('lock_timeout', ${`${lockTimeoutMs}ms`}::text, false),
                       -- a server-wide statement_timeout must not cut a long validation or index build short
                       pg_catalog.set_config('statement_timeout', '0', false)`.execute(conn)
      try {
        return await withMigrationLock(conn, () => namingLockHolders(conn, async () => {
          // The phases that refuse beside the single-tenant app's sessions would always find Citus's own on a coordinator.
          const citusOnly = (target.kind === 'open' || target.kind === 'contract') && !context.allowOldAppSessions && await onlyCitusOwnSessions(conn, await oldAppRoles(conn))
          if (citusOnly) progress('the superuser sessions connected here are Citus\'s own (its maintenance daemon, other nodes\' citus_internal connections): not the single-tenant app')
          const outcome = await inRun(citusOnly ? { allowOldAppSessions: true } : {}, () => runLocked(conn, target, options, journal, targetOf(db)))
          if (outcome.status !== 'error' && upward(target)) {
            if (keys) await storeTenantKeys(conn, keys)
            else if ((await storedTenantKeyIds(conn))?.length === 0) {
              progress('no tenant key is stored yet: withTenant refuses every tenant until the migrator is given the app\'s key (tenantKeys; the CLI reads SKILLS_DB_TENANT_KEYS)')
            }
          }
          return outcome
        }))
      } finally {
        // The connection goes back to the app's pool: leave nothing of ours on it. A transaction a
        // failed step left open is rolled back first (RESET ALL would fail inside it), then RESET ALL
        // returns every setting, skills_db.all_tenants included, to what the session started with.
        await sql`rollback`.execute(conn).catch(() => {})
        await sql`reset all`.execute(conn).catch(() => {})
      }
    }))
  } catch (error) {
    return { status: 'error', steps: [], error: toMigrationError(error, targetOf(db), journal.running) }
  }
}

/**
 * Runs `fn`; a lock timeout that no step handled itself (a read of the migrator's own tables, behind
 * a LOCK TABLE of skills_db.kysely_migration, say) ends it in one line naming the sessions that hold
 * tables of public or skills_db (an outside review got PostgreSQL's bare "canceling statement due to
 * lock timeout").
 */
async function namingLockHolders<T>(conn: Kysely<any>, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn()
  } catch (error) {
    if ((error as { code?: string }).code !== '55P03' || error instanceof LockRetryExhausted) throw error
    await sql`rollback`.execute(conn).catch(() => {})
    const who = await lockHolders(conn, PROJECT_TABLES, STRONG_LOCKS)
    if (!who) throw error
    throw new LockRetryExhausted(`gave up waiting for a lock, held by ${who}: end that session and run again (every step resumes where it stopped)`, { cause: error })
  }
}

async function runLocked(conn: Kysely<any>, target: Target, options: MigrateOptions, journal: RunJournal, server: DatabaseTarget | undefined): Promise<MigrationOutcome> {
  await preflight(conn, { upward: upward(target) })
  const provider = skillsDbMigrationProvider({ journal, ...(options.migrationsDir ? { folder: options.migrationsDir } : {}) })
  const known = await provider.getMigrations()
  // A database migrated by newer code: nothing here may run against it.
  const recorded = await readAppliedMigrations(conn)
  const unknown = recorded.filter((m) => !(m.name in known))
  if (unknown.length > 0) {
    return fail('unknown-migration', `the database records migration ${unknown.map((m) => m.name).join(', ')} but this code does not have it: deploy the code that has it, or roll it back with that code first`)
  }
  const adopted = upward(target) ? await adoptLegacySchema(conn) : false
  // Each phase waits for the operator's command; a database that reached a phase takes its later
  // migrations with `latest`. Later files may belong to earlier phases, hence unordered migrations:
  // Kysely applies the pending ones it is given in name order, and rolls back in the order applied.
  const phaseOf = await provider.phases()
  const applied = new Set(recorded.map((m) => m.name))
  const reached = reachedPhase([...applied], phaseOf)
  const furthestPhase = reach(target, reached)
  const mayApply = (name: string) => phaseRank(phaseOf.get(name) ?? 'expand') <= phaseRank(furthestPhase)
  const migratorOf = (may: (name: string) => boolean) => new Migrator({
    db: conn,
    provider: provider.only((name) => applied.has(name) || may(name)),
    migrationTableSchema: MIGRATION_SCHEMA,
    migrationTableName: MIGRATION_TABLE,
    allowUnorderedMigrations: true,
    // Each migration manages its own short transactions: one transaction around everything would
    // hold locks on every table at once, and CREATE INDEX CONCURRENTLY cannot run inside one.
    disableTransactions: true,
  })
  const migrator = migratorOf(mayApply)
  const waiting = Object.keys(known).sort().filter((name) => !applied.has(name) && !mayApply(name))
  let resultSet: MigrationResultSet
  switch (target.kind) {
    case 'latest':
    case 'open':
      resultSet = await migrator.migrateToLatest()
      break
    case 'contract':
      // On a database never opened (one tenant: 0013), in name order, as before the open phase existed.
      resultSet = reached === 'expand'
        ? await migrator.migrateToLatest()
        : await openPhaseFirst(migratorOf((name) => phaseRank(phaseOf.get(name) ?? 'expand') <= phaseRank('open')), migrator)
      break
    case 'up':
      resultSet = await migrator.migrateUp()
      break
    case 'move': {
      if (!(target.name in known)) return fail('unknown-migration', `unknown migration "${target.name}"; known: ${Object.keys(known).sort().join(', ')}`)
      if (!applied.has(target.name) && !mayApply(target.name)) {
        const phase = phaseOf.get(target.name) as Exclude<Phase, 'expand'>
        return fail('waits-for-operator', `${target.name} belongs to the ${phase} phase, which waits for the operator: apply it with ${PHASE_COMMAND[phase].api} ${PHASE_COMMAND[phase].when}`)
      }
      resultSet = await migrator.migrateTo(target.name)
      break
    }
    case 'down':
    case 'all-down':
    case 'to': {
      // (Read above: a down adopts nothing, so the history is as it was.)
      const applied = recorded
      if (applied.length === 0) return fail('nothing-to-do', 'nothing to roll back: no migration is applied')
      if (target.kind === 'to' && !applied.some((m) => m.name === target.name)) {
        return fail('unknown-migration', `unknown migration "${target.name}" to roll back to; applied: ${applied.map((m) => m.name).join(', ')}`)
      }
      resultSet =
        target.kind === 'down' ? await migrator.migrateDown()
        : target.kind === 'all-down' ? await migrator.migrateTo(NO_MIGRATIONS)
        : await migrator.migrateTo(target.name)
    }
  }
  const steps = (resultSet.results ?? [])
    .filter((r) => r.status === 'Success')
    .map((r) => ({ name: r.migrationName, direction: r.direction, ...(journal.timings.get(r.migrationName) ?? { startedAt: new Date(), durationMs: 0 }) }))
  if (resultSet.error) {
    // Without results (the lock release failed too, e.g. the connection died) the running migration says it.
    const failed = resultSet.results?.find((r) => r.status === 'Error')?.migrationName ?? journal.running
    return { status: 'error', steps, error: toMigrationError(resultSet.error, server, failed) }
  }
  if (steps.length === 0) {
    if (!upward(target)) return fail('nothing-to-do', 'nothing to roll back')
    return { status: 'up-to-date', steps: [], adopted, waiting }
  }
  // After a down, `status` says what waits; the outcome reports what it undid.
  return { status: 'applied', steps, adopted, waiting: upward(target) ? waiting : [] }
}

/**
 * The contract phase on a database opened to more tenants applies what is pending of the expand and
 * open phases first, then the rest: in name order, 0010 (a contract migration written before the
 * open phase) would run before an open-phase migration written later, such as 0017, which makes
 * 0010 safe beside other tenants.
 */
async function openPhaseFirst(open: Migrator, all: Migrator): Promise<MigrationResultSet> {
  const first = await open.migrateToLatest()
  if (first.error) return first
  const rest = await all.migrateToLatest()
  return { ...rest, results: [...(first.results ?? []), ...(rest.results ?? [])] }
}

function fail(kind: MigrationError['kind'], message: string): MigrationOutcome {
  return { status: 'error', steps: [], error: new MigrationError(kind, message) }
}
