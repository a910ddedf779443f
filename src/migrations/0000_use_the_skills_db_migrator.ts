import type { Kysely } from 'kysely'

/**
 * Not a migration: a guard. Kysely's own Migrator, or kysely-ctl pointed at this folder, would run
 * these files in name order without what skills-db's migrator does first (the migration lock, the
 * checks before anything changes, adopting the single-tenant schema instead of creating it again),
 * so this file, first in that order, stops them. skills-db's migrator leaves it out
 * (migration-provider.ts), so it is never recorded.
 */
export async function up(_db: Kysely<any>): Promise<void> {
  throw new Error(
    "skills-db's migrations run only through skills-db's migrator, which takes the migration lock, checks the target and adopts an existing " +
      'single-tenant schema: run skills-db latest, call migrateToLatest(), or give kysely-ctl migrations: { migrator: skillsDbMigrator() } (README, "kysely-ctl")',
  )
}
