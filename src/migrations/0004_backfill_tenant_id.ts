import type { Kysely } from 'kysely'
import { backfillNulls } from '../online/backfill.ts'
import { progress } from '../online/progress.ts'
import { defaultTenantId } from '../tenancy/default-tenant.ts'
import { TENANT_TABLES } from '../tenancy/tenant-tables.ts'

/** Gives every row still without a tenant the default tenant, in short batches. */
export async function up(db: Kysely<any>): Promise<void> {
  const tenant = await defaultTenantId(db)
  for (const table of TENANT_TABLES) {
    const n = await backfillNulls(db, table, 'tenant_id', tenant)
    progress(`  ${table}: ${n} rows backfilled`)
  }
}

/** Nothing to undo: the schema is unchanged, and the values stay valid for 0003's columns. */
export async function down(): Promise<void> {}
