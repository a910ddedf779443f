import { describeConnectionError } from '../connection/connection-error.ts'
import type { DatabaseTarget } from '../connection/database-url.ts'
import { RoleNameError } from '../online/app-role.ts'
import { LockRetryExhausted } from '../online/lock-retry.ts'
import { Refusal, type RefusalKind } from '../online/refusal.ts'
import { SchemaMismatchError } from './legacy-adoption.ts'
import { MigrationLockTimeout } from './migration-lock.ts'
import { InvalidMigrationError } from './migration-provider.ts'
import { PreflightRefused } from './preflight.ts'
import { TenantKeyError } from '../tenancy/tenant-key.ts'

/** What went wrong, for a caller that decides what to do about it (the CLI picks its advice by it). */
export type MigrationErrorKind =
  /** cannot reach or log in to the server, or lost it mid-run (every step resumes on a rerun) */
  | 'connection'
  /** the server, the migrator's role or the app's roles are not fit for the run; nothing changed */
  | 'preflight'
  /** tables but no history, and not the legacy schema; nothing changed */
  | 'schema-mismatch'
  /** a migration file does not load or has no `up` */
  | 'invalid-migration'
  /** the database records a migration this code lacks, or a migration asked for does not exist */
  | 'unknown-migration'
  /** an option's value is not usable (a malformed tenant key) */
  | 'invalid-options'
  /** nothing to do in that direction (nothing to roll back) */
  | 'nothing-to-do'
  /** a target in the open or contract phase, which only `migrateOpen` or `migrateContract` applies */
  | 'waits-for-operator'
  /** a lock (a table's, or the migration lock) stayed taken for longer than the run waits */
  | 'lock-timeout'
  /** anything else: a server error or a bug; `cause` holds the original */
  | 'failed'
  | RefusalKind

/** A failed run: what kind, in which migration, the one-line message, and the original error. */
export class MigrationError extends Error {
  /** Always `'MigrationError'`, so a log line or a check of `error.name` tells it apart. */
  override name = 'MigrationError'
  /** What went wrong, to decide what to do about it; see {@link MigrationErrorKind}. */
  readonly kind: MigrationErrorKind
  /** The migration that failed (its file name, without extension); absent when the run failed outside one. */
  readonly migration?: string
  /** More lines, where one cannot say it all (the differences of a schema mismatch). */
  readonly details?: string[]
  /** What went wrong, without `remedy`: the message is the two together. */
  readonly reason: string
  /** What to do about it, in the library's terms (its options), where the message has it apart. */
  readonly remedy?: string

  constructor(kind: MigrationErrorKind, reason: string, extra: { migration?: string; cause?: unknown; details?: string[]; remedy?: string } = {}) {
    super(extra.remedy ? `${reason}; ${extra.remedy}` : reason, extra.cause === undefined ? undefined : { cause: extra.cause })
    this.kind = kind
    this.reason = reason
    if (extra.remedy) this.remedy = extra.remedy
    if (extra.migration) this.migration = extra.migration
    if (extra.details) this.details = extra.details
  }
}

const LOST = /Connection terminated|connection terminated|ECONNRESET|connection error and is not queryable/

/** The error a run ends with, classified; its message is the original's first line unless a better one is known. */
export function toMigrationError(error: unknown, target: DatabaseTarget | undefined, migration?: string): MigrationError {
  if (error instanceof MigrationError) return error
  const where = migration ? { migration } : {}
  const message = error instanceof Error ? error.message : String(error)
  const first = message.split('\n')[0]!
  // Our own errors first, by class: their messages may quote other sessions' queries, which could look like anything.
  if (error instanceof Refusal) {
    return new MigrationError(error.kind, error.reason, { ...where, cause: error, ...(error.remedy ? { remedy: error.remedy } : {}) })
  }
  const ours: MigrationErrorKind | undefined =
    error instanceof PreflightRefused || error instanceof RoleNameError ? 'preflight'
    : error instanceof TenantKeyError ? 'invalid-options'
    : error instanceof SchemaMismatchError ? 'schema-mismatch'
    : error instanceof InvalidMigrationError ? 'invalid-migration'
    : error instanceof LockRetryExhausted || error instanceof MigrationLockTimeout ? 'lock-timeout'
    : undefined
  if (ours) return new MigrationError(ours, first, { ...where, cause: error, ...(error instanceof SchemaMismatchError ? { details: error.differences } : {}) })
  const connection = target ? describeConnectionError(error, target) : undefined
  if (connection) return new MigrationError('connection', connection, { ...where, cause: error })
  const code = (error as { code?: string }).code
  if (code === '57P01' || code === '57P02' || LOST.test(message)) {
    return new MigrationError('connection', `lost the connection to PostgreSQL during the migration (${first})`, { ...where, cause: error, remedy: 'every step resumes where it stopped: run it again' })
  }
  return new MigrationError('failed', first, { ...where, cause: error })
}
