import type { Kysely } from 'kysely'
import { skillsDbMigrationProvider } from './migration-provider.ts'
import { readAppliedMigrations, type AppliedMigration } from './migration-table.ts'

export interface MigrationStatus {
  applied: AppliedMigration[]
  pending: string[]
  /**
   * The pending migrations that wait for the operator: the first pending one of the contract
   * phase and everything after it (`latest` stops before them; `contract` applies them).
   */
  waiting: string[]
  /** Recorded in the database, absent from the code: the code is older than the database. */
  unknown: AppliedMigration[]
}

/** Compares the migrations in the code with those recorded in the database. Read-only. */
export async function migrationStatus(db: Kysely<any>, migrationsDir?: string): Promise<MigrationStatus> {
  const provider = skillsDbMigrationProvider(migrationsDir ? { folder: migrationsDir } : {})
  const known = Object.keys(await provider.getMigrations()).sort()
  const contract = await provider.contractMigrations()
  const recorded = await readAppliedMigrations(db)
  const recordedNames = new Set(recorded.map((m) => m.name))
  const pending = known.filter((name) => !recordedNames.has(name))
  const gate = pending.findIndex((name) => contract.includes(name))
  return {
    applied: recorded.filter((m) => known.includes(m.name)),
    pending,
    waiting: gate < 0 ? [] : pending.slice(gate),
    unknown: recorded.filter((m) => !known.includes(m.name)),
  }
}
