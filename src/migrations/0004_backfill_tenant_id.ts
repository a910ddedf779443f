import { sql, type Kysely } from 'kysely'
import { backfillNulls } from '../online/backfill.ts'
import { progress } from '../online/run-context.ts'

// Frozen: this migration's own facts, as of when it was written (see README.md in this folder).
const TABLES = [
  'users', 'skills', 'ratings', 'usage_events', 'skill_versions',
  'skill_embeddings', 'skill_reviews', 'api_keys', 'site_settings',
] as const

async function defaultTenantId(db: Kysely<any>): Promise<string> {
  const { rows } = await sql<{ id: string }>`select id from tenants where slug = 'default'`.execute(db)
  if (!rows[0]) throw new Error(`the default tenant (slug 'default') is missing from tenants; 0002_add_tenants creates it: restore that row`)
  return rows[0].id
}

/** Gives every row still without a tenant the default tenant, in short batches. */
export async function up(db: Kysely<any>): Promise<void> {
  const tenant = await defaultTenantId(db)
  for (const table of TABLES) {
    const n = await backfillNulls(db, table, 'tenant_id', tenant)
    progress(`  ${table}: ${n} rows backfilled`)
  }
}

/** Nothing to undo: the schema is unchanged, and the values stay valid for 0003's columns. */
export async function down(): Promise<void> {}
