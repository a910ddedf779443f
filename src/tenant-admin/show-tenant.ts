import { sql, type Kysely } from 'kysely'
import { asOperator, beingDeleted, readLocked, tenantRow } from './operator-session.ts'
import { TENANT_TABLES } from './tenant-tables.ts'

export interface TenantSummary {
  id: string
  slug: string
  name: string
  domain: string | null
  plan: string
  active: boolean
  createdAt: string
}

export interface TenantDetail extends TenantSummary {
  /** A delete began and did not finish (it was stopped or killed): some rows are gone; `tenant delete` again finishes it. */
  beingDeleted: boolean
  /** Per table: the tenant's rows, and their size in bytes (pg_column_size of each row: the data, not its share of indexes). */
  tables: Record<string, { rows: number; bytes: number }>
  /** What skills_db.tenant_lifecycle recorded of it, oldest first. */
  history: { at: string; event: string; byRole: string }[]
  /** On Citus: the shard and node of its rows (of users, one table of the colocation group), and citus_stat_tenants' row where the cluster keeps one. */
  citus?: { shardId: string; node: string; stats?: Record<string, unknown> }
}

const SUMMARY = sql`select id, slug, name, domain, plan, is_active as active, to_char(created_at, 'YYYY-MM-DD"T"HH24:MI:SS') as "createdAt" from public.tenants`

/** Every tenant, oldest first. Holds the migration lock while it reads (it reads as the migrator). */
export async function listTenants(db: Kysely<any>): Promise<TenantSummary[]> {
  return asOperator(db, async (conn) => (await sql<TenantSummary>`${SUMMARY} order by created_at, id`.execute(conn)).rows)
}

/** One tenant: its row, its rows and bytes per table, its lifecycle, and on Citus where it lives. */
export async function showTenant(db: Kysely<any>, tenantId: string): Promise<TenantDetail> {
  return asOperator(db, (session) => session.transaction().execute(async (conn) => {
    await readLocked(conn, ['public.tenants', ...TENANT_TABLES.map((t) => `public.${t.table}`), 'skills_db.tenant_lifecycle', 'skills_db.tenant_removals'])
    await tenantRow(conn, tenantId)
    const { rows: summary } = await sql<TenantSummary>`${SUMMARY} where id = ${tenantId}`.execute(conn)
    const tables: TenantDetail['tables'] = {}
    for (const { table } of TENANT_TABLES) {
      const { rows } = await sql<{ rows: number; bytes: string }>`
        select count(*)::int as rows, coalesce(sum(pg_catalog.pg_column_size(x.*)), 0)::text as bytes
        from ${sql.table(`public.${table}`)} x where x.tenant_id = ${tenantId}`.execute(conn)
      tables[table] = { rows: rows[0]!.rows, bytes: Number(rows[0]!.bytes) }
    }
    const { rows: history } = await sql<{ at: string; event: string; byRole: string }>`
      select to_char(at at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS"Z"') as at, event, by_role as "byRole"
      from skills_db.tenant_lifecycle where tenant_id = ${tenantId} order by at`.execute(conn)
    const detail: TenantDetail = { ...summary[0]!, beingDeleted: await beingDeleted(conn, tenantId), tables, history }
    const citus = await citusPlacement(conn, tenantId)
    if (citus) detail.citus = citus
    return detail
  }))
}

async function citusPlacement(conn: Kysely<any>, tenantId: string): Promise<TenantDetail['citus']> {
  const { rows: citus } = await sql<{ t: string | null }>`select pg_catalog.to_regclass('pg_catalog.pg_dist_partition')::text as t`.execute(conn)
  if (!citus[0]?.t) return undefined
  const { rows: distributed } = await sql`select 1 from pg_catalog.pg_dist_partition where logicalrelid = 'public.users'::regclass`.execute(conn)
  if (distributed.length === 0) return undefined
  const { rows } = await sql<{ shard: string; node: string }>`
    select s.shardid::text as shard, s.nodename || ':' || s.nodeport as node
    from pg_catalog.citus_shards s
    where s.shardid = pg_catalog.get_shard_id_for_distribution_column('public.users', ${tenantId}::text) limit 1`.execute(conn)
  const placement: NonNullable<TenantDetail['citus']> = { shardId: rows[0]?.shard ?? '', node: rows[0]?.node ?? '' }
  const { rows: has } = await sql<{ t: string | null }>`select pg_catalog.to_regclass('pg_catalog.citus_stat_tenants')::text as t`.execute(conn)
  if (has[0]?.t) {
    const { rows: stats } = await sql<Record<string, unknown>>`select * from pg_catalog.citus_stat_tenants where tenant_attribute = ${tenantId}`.execute(conn).catch(() => ({ rows: [] }))
    if (stats[0]) placement.stats = stats[0]
  }
  return placement
}
