import { sql, type Kysely } from 'kysely'

export const DEFAULT_TENANT_SLUG = 'default'
/** The id the plan seeds; an existing default tenant under another id is found by slug instead. */
export const DEFAULT_TENANT_SEED_ID = 'default-tenant-000-0000-000000000000'

/** The default tenant's id, looked up by slug (never assumed). */
export async function defaultTenantId(db: Kysely<any>): Promise<string> {
  const { rows } = await sql<{ id: string }>`select id from tenants where slug = ${DEFAULT_TENANT_SLUG}`.execute(db)
  if (!rows[0]) throw new Error(`the default tenant (slug '${DEFAULT_TENANT_SLUG}') is missing from tenants; 0002_add_tenants creates it — restore that row`)
  return rows[0].id
}
