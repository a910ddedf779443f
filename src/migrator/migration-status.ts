import type { Kysely } from 'kysely'
import { timedMigrationProvider } from './migration-provider.ts'
import { silentLogger } from './migration-logger.ts'
import { readAppliedMigrations, type AppliedMigration } from './migration-table.ts'

export interface MigrationStatus {
  applied: AppliedMigration[]
  pending: string[]
  /** Recorded in the database, absent from the code: the code is older than the database. */
  unknown: AppliedMigration[]
}

/** Compares the migrations in the code with those recorded in the database. Read-only. */
export async function migrationStatus(db: Kysely<any>, migrationsDir?: string): Promise<MigrationStatus> {
  const known = Object.keys(await timedMigrationProvider(silentLogger, migrationsDir).getMigrations()).sort()
  const recorded = await readAppliedMigrations(db)
  const recordedNames = new Set(recorded.map((m) => m.name))
  return {
    applied: recorded.filter((m) => known.includes(m.name)),
    pending: known.filter((name) => !recordedNames.has(name)),
    unknown: recorded.filter((m) => !known.includes(m.name)),
  }
}
