import { sql, type Kysely } from 'kysely'
import { diffSnapshots, takeSchemaSnapshot, type SchemaSnapshot } from '../catalog/schema-snapshot.ts'
import legacySchema from './legacy-schema.json' with { type: 'json' }
import type { MigrationLogger } from './migration-logger.ts'
import { readAppliedMigrations, recordApplied } from './migration-table.ts'

export const BASELINE_MIGRATION = '0001_baseline'

export class SchemaMismatchError extends Error {
  override name = 'SchemaMismatchError'
  constructor(readonly differences: string[]) {
    super(
      `the database has tables but no skills-db migration history, and its schema is not the legacy schema ` +
        `(${differences.length} difference${differences.length === 1 ? '' : 's'}, first: ${differences[0]}). ` +
        `Nothing was changed. Point DATABASE_URL at the production database or an empty one`,
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
export async function adoptLegacySchema(db: Kysely<any>, logger: MigrationLogger): Promise<boolean> {
  if ((await readAppliedMigrations(db)).length > 0) return false
  const { rows } = await sql<{ n: number }>`
    select count(*)::int as n from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = 'public' and c.relkind in ('r', 'p', 'v', 'm')`.execute(db)
  if (!rows[0]?.n) return false

  const differences = diffSnapshots(legacySchema as SchemaSnapshot, await takeSchemaSnapshot(db))
  if (differences.length > 0) throw new SchemaMismatchError(differences)

  await db.transaction().execute((trx) => recordApplied(trx, BASELINE_MIGRATION))
  logger.info(`adopted the existing single-tenant schema: ${BASELINE_MIGRATION} recorded as applied (not run)`)
  return true
}
