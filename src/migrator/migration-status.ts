import type { Kysely } from 'kysely'
import { phaseRank, reachedPhase, type Phase } from './migration-phases.ts'
import { skillsDbMigrationProvider } from './migration-provider.ts'
import { readAppliedMigrations, type AppliedMigration } from './migration-table.ts'

/** Where the database stands against this code's migrations, from {@link migrationStatus}. */
export interface MigrationStatus {
  /**
   * The migrations of this code that the database records as applied, oldest first, each as
   * `{ name, appliedAt }` (appliedAt: the ISO time Kysely recorded).
   */
  applied: AppliedMigration[]
  /** This code's migrations the database has not applied, by name, in order. */
  pending: string[]
  /**
   * The pending migrations that wait for the operator: those of a phase (open, contract) the
   * database has not reached (`latest` leaves them; `open` and `contract` apply them).
   */
  waiting: string[]
  /** Recorded in the database, absent from the code: the code is older than the database. */
  unknown: AppliedMigration[]
  /** The furthest phase the database has reached (see migration-phases.ts), and each migration's. */
  phase: Phase
  /** Each migration of this code by name, with the phase it belongs to. */
  phases: Record<string, Phase>
}

/**
 * Compares the migrations in the code with those recorded in the database. Read-only.
 *
 * @example
 * const status = await migrationStatus(db)
 * if (status.unknown.length > 0) throw new Error(`this code is older than the database: ${status.unknown.map((m) => m.name).join(', ')}`)
 * console.log(`phase ${status.phase}; pending: ${status.pending.join(', ') || 'none'}`)
 */
export async function migrationStatus(db: Kysely<any>, migrationsDir?: string): Promise<MigrationStatus> {
  const provider = skillsDbMigrationProvider(migrationsDir ? { folder: migrationsDir } : {})
  const known = Object.keys(await provider.getMigrations()).sort()
  const phaseOf = await provider.phases()
  const recorded = await readAppliedMigrations(db)
  const recordedNames = new Set(recorded.map((m) => m.name))
  const pending = known.filter((name) => !recordedNames.has(name))
  const phase = reachedPhase(recorded.map((m) => m.name), phaseOf)
  return {
    applied: recorded.filter((m) => known.includes(m.name)),
    pending,
    waiting: pending.filter((name) => phaseRank(phaseOf.get(name) ?? 'expand') > phaseRank(phase)),
    unknown: recorded.filter((m) => !known.includes(m.name)),
    phase,
    phases: Object.fromEntries(known.map((name) => [name, phaseOf.get(name) ?? 'expand'])),
  }
}
