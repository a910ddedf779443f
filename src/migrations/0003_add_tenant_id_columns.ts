import { sql, type Kysely } from 'kysely'
import { addColumn } from '../online/add-column.ts'
import { guardDown, refuseDataLoss } from '../online/data-loss-guard.ts'
import { applySteps, revertSteps, type Step } from '../online/step.ts'
import { defaultTenantId } from '../tenancy/default-tenant.ts'
import { TENANT_TABLES } from '../tenancy/tenant-tables.ts'

/**
 * tenant_id on the nine data tables. Existing rows read as the default tenant through a catalog
 * default (no rewrite); rows inserted later get the current tenant, or the default tenant when
 * the (old, single-tenant) app sets none — so no later step meets a NULL.
 */
const steps: Step[] = [
  ...TENANT_TABLES.map((table) =>
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
      for (const table of TENANT_TABLES) {
        const { rows } = await sql`select 1 from ${sql.table(table)} where tenant_id is distinct from ${tenant} limit 1`.execute(db)
        if (rows.length > 0) return true
      }
      return false
    })),
]

export const up = (db: Kysely<any>) => applySteps(db, steps)
export const down = (db: Kysely<any>) => revertSteps(db, steps)
