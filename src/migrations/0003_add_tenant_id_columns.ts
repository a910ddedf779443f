import { sql, type Kysely } from 'kysely'
import { addColumn } from '../online/add-column.ts'
import { guardDown, refuseDataLoss } from '../online/data-loss-guard.ts'
import { applySteps, revertSteps, type Step } from '../online/step.ts'

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

/**
 * tenant_id on the nine data tables. Existing rows read as the default tenant through a catalog
 * default (no rewrite); rows inserted later get the current tenant, or the default tenant when
 * the (old, single-tenant) app sets none — so no later step meets a NULL.
 */
const steps: Step[] = [
  ...TABLES.map((table) =>
    addColumn({
      table,
      column: 'tenant_id',
      type: 'text',
      existingRows: async (db) => sql.lit(await defaultTenantId(db)),
      newRows: async (db) => sql`coalesce(nullif(current_setting('app.current_tenant_id', true), ''), ${sql.lit(await defaultTenantId(db))})`,
    }),
  ),
  guardDown('no rows outside the default tenant', (db) =>
    refuseDataLoss(db, 'rows of tenants other than the default one exist, and dropping tenant_id would merge them into one', async () => {
      const tenant = await defaultTenantId(db)
      for (const table of TABLES) {
        const { rows } = await sql`select 1 from ${sql.table(table)} where tenant_id is distinct from ${tenant} limit 1`.execute(db)
        if (rows.length > 0) return true
      }
      return false
    })),
]

export const up = (db: Kysely<any>) => applySteps(db, steps)
export const down = (db: Kysely<any>) => revertSteps(db, steps)
