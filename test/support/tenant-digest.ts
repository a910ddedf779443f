import { sql } from 'kysely'
import { asSuperuser } from './database.ts'

/** Every table that holds a tenant's rows, besides tenants itself. */
export const TENANT_DATA_TABLES = ['users', 'skills', 'skill_versions', 'skill_embeddings', 'skill_reviews', 'ratings', 'usage_events', 'api_keys', 'site_settings', 'audit_logs', 'audit_signatures']

/** Every row of the tenant, table by table, as PostgreSQL prints it: what "identical rows" is checked against. */
export async function tenantDigest(url: string, tenantId: string): Promise<Record<string, string>> {
  return asSuperuser(url, async (db) => {
    const digest: Record<string, string> = {}
    for (const table of ['tenants', ...TENANT_DATA_TABLES]) {
      const where = table === 'tenants' ? sql`x.id = ${tenantId}` : sql`x.tenant_id = ${tenantId}`
      const { rows } = await sql<{ d: string | null; n: number }>`select md5(string_agg(x::text, '|' order by x::text collate "C")) as d, count(*)::int as n
        from ${sql.table(table)} x where ${where}`.execute(db)
      digest[table] = `${rows[0]!.n}:${rows[0]!.d}`
    }
    return digest
  })
}
