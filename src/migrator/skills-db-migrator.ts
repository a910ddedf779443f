import type { Kysely } from 'kysely'
import { Migrator, NO_MIGRATIONS, type MigrationInfo, type MigrationResult, type MigrationResultSet } from 'kysely/migration'
import { migrateDown, migrateTo, migrateToLatest, migrateUp, type MigrateOptions, type MigrationOutcome } from './migrate.ts'
import { skillsDbMigrationProvider } from './migration-provider.ts'
import { MIGRATION_SCHEMA, MIGRATION_TABLE } from './migration-table.ts'

/**
 * skills-db's migrator with the methods kysely-ctl calls (those of Kysely's Migrator), so that
 * `kysely migrate latest` takes the same path as `skills-db latest`: the migration lock, the checks
 * before anything changes, the adoption of the single-tenant schema, the tenant keys.
 *
 * @example
 * // kysely.config.ts
 * import { defineConfig } from 'kysely-ctl'
 * import { createDb, skillsDbMigrator } from 'skills-db'
 * export default defineConfig({
 *   kysely: () => createDb(process.env.DATABASE_URL!, { max: 1 }),
 *   migrations: { migrator: skillsDbMigrator({ appRole: 'app_user', logger: console }) },
 * })
 */
export function skillsDbMigrator(options: MigrateOptions = {}): (db: Kysely<any>) => SkillsDbMigrator {
  return (db) => new SkillsDbMigrator(db, options)
}

/**
 * What {@link skillsDbMigrator} gives kysely-ctl: the methods of Kysely's `Migrator` it calls, each
 * running skills-db's own (`migrateToLatest`, …) and answering as Kysely's does: a
 * `MigrationResultSet` with the migrations that ran, then the one that failed, and the run's
 * {@link MigrationError} as `error`. Never throws for a failed run.
 */
export class SkillsDbMigrator {
  readonly #db: Kysely<any>
  readonly #options: MigrateOptions

  constructor(db: Kysely<any>, options: MigrateOptions = {}) {
    this.#db = db
    this.#options = options
  }

  /** Every migration of skills-db, with when it was applied (read only). */
  getMigrations(): Promise<readonly MigrationInfo[]> {
    return new Migrator({
      db: this.#db,
      provider: skillsDbMigrationProvider(this.#options.migrationsDir ? { folder: this.#options.migrationsDir } : {}),
      migrationTableSchema: MIGRATION_SCHEMA,
      migrationTableName: MIGRATION_TABLE,
    }).getMigrations()
  }

  /** {@link migrateToLatest}, answered as Kysely's `Migrator.migrateToLatest`. */
  async migrateToLatest(): Promise<MigrationResultSet> {
    return resultSet(await migrateToLatest(this.#db, this.#options), 'Up')
  }

  /** {@link migrateUp}, answered as Kysely's `Migrator.migrateUp`. */
  async migrateUp(): Promise<MigrationResultSet> {
    return resultSet(await migrateUp(this.#db, this.#options), 'Up')
  }

  /** {@link migrateDown} (one migration), answered as Kysely's `Migrator.migrateDown`. */
  async migrateDown(): Promise<MigrationResultSet> {
    return resultSet(await migrateDown(this.#db, this.#options), 'Down')
  }

  /**
   * {@link migrateTo}, answered as Kysely's `Migrator.migrateTo`: to the migration `target`, up or
   * down, or everything down with Kysely's `NO_MIGRATIONS`.
   */
  async migrateTo(target: string | typeof NO_MIGRATIONS): Promise<MigrationResultSet> {
    if (target === NO_MIGRATIONS) return resultSet(await migrateTo(this.#db, 'all', this.#options), 'Down')
    const name = target as string
    // Down when the target is applied already (every migration after it goes), else up to it.
    const applied = (await this.getMigrations()).some((m) => m.name === name && m.executedAt !== undefined)
    return resultSet(await migrateTo(this.#db, name, this.#options), applied ? 'Down' : 'Up')
  }
}

/** An outcome as Kysely reports one: the migrations that ran, then the one that failed. */
function resultSet(outcome: MigrationOutcome, direction: 'Up' | 'Down'): MigrationResultSet {
  const results: MigrationResult[] = outcome.steps.map((s) => ({ migrationName: s.name, direction: s.direction, status: 'Success' }))
  if (outcome.status !== 'error') return { results }
  if (outcome.error.migration) results.push({ migrationName: outcome.error.migration, direction, status: 'Error' })
  return { error: outcome.error, results }
}
