import { AsyncLocalStorage } from 'node:async_hooks'

/**
 * What the migrator tells the building blocks about one run: the only way options reach a
 * migration, which receives nothing but `db`. Set once per run (`inRun`), read anywhere below it
 * (`run()`), so two runs in one process, even interleaved, never see each other's.
 */
export interface RunContext {
  /** Where the blocks report progress. */
  logger: { info(message: string): void }
  /** The application role asked for; absent: the one recorded in the database, else app_user. */
  appRole?: string
  /** Roles the single-tenant app connects as, named for this run. */
  oldAppRoles: readonly string[]
  /** A `down` may drop data it cannot restore. */
  allowDataLoss: boolean
  /** The contract phase may go ahead beside sessions of the old app's roles. */
  allowOldAppSessions: boolean
  /** The timestamp columns hold UTC, whatever the server's TimeZone says. */
  timestampsAreUtc: boolean
  /** How long one DDL statement may wait for its lock: the most the app is held up behind it. */
  lockTimeoutMs: number
  /** How long a step keeps retrying a busy lock before it stops and names the blocker. */
  lockRetryBudgetMs: number
  /** Rows per backfill transaction. */
  batchSize: number
  /** The session's own lock_timeout, when the migrator set it (saves a round trip per DDL transaction). */
  sessionLockTimeoutMs?: number
  /** The migration under way. */
  migration?: string
  /**
   * On Citus, what the watcher of the run's waits on the workers found (src/citus/remote-waits.ts):
   * the sessions a statement it cancelled waited behind, until an error handler takes them.
   */
  remoteWaits?: { blocker?: string; thresholdMs?: number; wake?: string }
  /** What the migrator does on its session before each migration (registers its view of every tenant). */
  beforeEachMigration?: (db: import('kysely').Kysely<any>) => Promise<void>
}

/** Outside a run (a building block called on its own, as in its tests): quiet, with the defaults. */
export const DEFAULT_RUN: RunContext = Object.freeze({
  logger: { info() {} },
  oldAppRoles: [],
  allowDataLoss: false,
  allowOldAppSessions: false,
  timestampsAreUtc: false,
  lockTimeoutMs: 50,
  lockRetryBudgetMs: 120_000,
  batchSize: 5_000,
})

const storage = new AsyncLocalStorage<RunContext>()

/** The context of the run this code is part of. */
export function run(): RunContext {
  return storage.getStore() ?? DEFAULT_RUN
}

/** Runs `fn`, and everything it awaits, with `context` (over the enclosing one's fields). */
export function inRun<T>(context: Partial<RunContext>, fn: () => T): T {
  return storage.run({ ...run(), ...context }, fn)
}

/** Progress of the run, through its logger. */
export function progress(message: string): void {
  run().logger.info(message)
}
