import { sql, type Kysely } from 'kysely'
import { diffSnapshots, takeSchemaSnapshot, type SchemaSnapshot } from '../catalog/schema-snapshot.ts'
import legacySchema from './legacy-schema.json' with { type: 'json' }
import { progress } from '../online/run-context.ts'
import { readAppliedMigrations, recordApplied } from './migration-table.ts'

export const BASELINE_MIGRATION = '0001_baseline'

/**
 * The database has tables but no skills-db migration history, and they are not the legacy schema the
 * migrator adopts: it changed nothing. A failed run's {@link MigrationError} (kind `schema-mismatch`)
 * carries it as its cause, and its `differences` as its `details`.
 */
export class SchemaMismatchError extends Error {
  /** Always `'SchemaMismatchError'`, so a log line or a check of `error.name` tells it apart. */
  override name = 'SchemaMismatchError'
  constructor(
    /** Each way the database differs from the legacy schema, one line each (a table, column, index, … missing, extra or other). */
    readonly differences: string[],
  ) {
    super(
      `the database has tables but no skills-db migration history, and its schema is not the legacy schema ` +
        `(${differences.length} difference${differences.length === 1 ? '' : 's'}, first: ${differences[0]}). ` +
        `Nothing was changed. Point the migrator at the production database or an empty one`,
    )
  }
}

/**
 * A database made by the single-tenant app (Drizzle) has the baseline schema but no migration
 * history. When its catalog matches the baseline exactly, record 0001 as applied without running it;
 * when it does not, refuse with the list of differences and change nothing.
 *
 * @returns whether the database was adopted
 */
export async function adoptLegacySchema(db: Kysely<any>): Promise<boolean> {
  if ((await readAppliedMigrations(db)).length > 0) return false
  const strays = await emptyKyselyBookkeeping(db)
  const { rows } = await sql<{ n: number }>`
    select count(*)::int as n from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = 'public' and c.relkind in ('r', 'p', 'v', 'm') and c.relname <> all(${strays}::text[])
      -- What an extension keeps in public (Citus's citus_tables and citus_schemas) is not the app's.
      and not exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass and d.objid = c.oid and d.deptype = 'e')`.execute(db)
  if (strays.length > 0) {
    progress(`left ${strays.join(' and ')} in public alone: Kysely's own bookkeeping, made by a migrator that applied nothing there (drop them when you like)`)
  }
  if (!rows[0]?.n) return false

  const differences = diffSnapshots(legacySchema as SchemaSnapshot, await takeSchemaSnapshot(db, { exclude: strays }))
  if (differences.length > 0) throw new SchemaMismatchError(differences)

  await db.transaction().execute((trx) => recordApplied(trx, BASELINE_MIGRATION))
  progress(`adopted the existing single-tenant schema: ${BASELINE_MIGRATION} recorded as applied (not run)`)
  return true
}

/**
 * Kysely's default migration tables in public, when the migrator that made them recorded no
 * migration: what Kysely's own Migrator (kysely-ctl pointed at skills-db's folder) leaves behind
 * when 0000's guard stops it. Not part of the app's schema, so not held against adoption.
 */
async function emptyKyselyBookkeeping(db: Kysely<any>): Promise<string[]> {
  const { rows } = await sql<{ t: string | null }>`select pg_catalog.to_regclass('public.kysely_migration')::text as t`.execute(db)
  if (!rows[0]?.t) return []
  const { rows: recorded } = await sql`select 1 from public.kysely_migration limit 1`.execute(db)
  if (recorded.length > 0) return []
  const { rows: lock } = await sql<{ t: string | null }>`select pg_catalog.to_regclass('public.kysely_migration_lock')::text as t`.execute(db)
  return lock[0]?.t ? ['kysely_migration', 'kysely_migration_lock'] : ['kysely_migration']
}
