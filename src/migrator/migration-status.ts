import type { Kysely } from 'kysely'
import { phaseRank, reachedPhase, type Phase } from './migration-phases.ts'
import { skillsDbMigrationProvider } from './migration-provider.ts'
import { readAppliedMigrations, type AppliedMigration } from './migration-table.ts'

export interface MigrationStatus {
  applied: AppliedMigration[]
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
  phases: Record<string, Phase>
}

/** Compares the migrations in the code with those recorded in the database. Read-only. */
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
