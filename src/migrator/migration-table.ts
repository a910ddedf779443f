import { sql, type Kysely } from 'kysely'

/** The migrator keeps its bookkeeping out of `public`, so the app's schema (and its types) stay its own. */
export const MIGRATION_SCHEMA = 'skills_db'
export const MIGRATION_TABLE = 'kysely_migration'

export interface AppliedMigration {
  name: string
  appliedAt: string
}

/** What the database says was applied, oldest first; empty when it was never migrated. */
export async function readAppliedMigrations(db: Kysely<any>): Promise<AppliedMigration[]> {
  const { rows: exists } = await sql<{ t: string | null }>`select pg_catalog.to_regclass(${`${MIGRATION_SCHEMA}.${MIGRATION_TABLE}`}::text) as t`.execute(db)
  if (!exists[0]?.t) return []
  const { rows } = await sql<AppliedMigration>`
    select name, timestamp as "appliedAt" from ${sql.table(`${MIGRATION_SCHEMA}.${MIGRATION_TABLE}`)}
    order by timestamp, name`.execute(db)
  return rows
}

/** Records a migration as applied without running it, creating the table the way Kysely does. */
export async function recordApplied(db: Kysely<any>, name: string): Promise<void> {
  await sql`create schema if not exists ${sql.id(MIGRATION_SCHEMA)}`.execute(db)
  await sql`create table if not exists ${sql.table(`${MIGRATION_SCHEMA}.${MIGRATION_TABLE}`)}
    (name varchar(255) not null primary key, timestamp varchar(255) not null)`.execute(db)
  await sql`insert into ${sql.table(`${MIGRATION_SCHEMA}.${MIGRATION_TABLE}`)} (name, timestamp)
    values (${name}, ${new Date().toISOString()}) on conflict (name) do nothing`.execute(db)
}
