import { sql, type Kysely } from 'kysely'
import { appRoleName } from '../online/app-role.ts'
import { withLockRetry } from '../online/lock-retry.ts'
import { run } from '../online/run-context.ts'
import { transactionsInFlightEnded } from '../online/transactions-in-flight.ts'
import { asOperator, readLocked, TenantAdminError } from './operator-session.ts'
import { TENANT_TABLES } from './tenant-tables.ts'

const CONTRACT_MIGRATION = '0015_contract_without_side_channels'

export interface DeleteOptions {
  /** Rows per transaction (default 1000): each holds the locks of that many rows of one suspended tenant. */
  batchSize?: number
  onProgress?: (p: { table: string; deleted: number }) => void
  /** How long to wait for the app's transactions open when the deletion starts (default: the run's lock retry budget, 120 000 ms; the CLI's --lock-retry-budget-ms); then it stops, naming them, and a rerun goes on. */
  waitBudgetMs?: number
}

/**
 * Removes a suspended tenant and every row of it, its audit trail included, in short transactions
 * of `batchSize` rows, children before parents; the other tenants' requests go on (each batch locks
 * only rows of this tenant, which nobody else reads or writes while it is suspended). The tenant is
 * listed in skills_db.tenant_removals first, so a run killed at any point resumes when run again, and
 * the tenant cannot be reactivated half-deleted. skills_db.tenant_lifecycle keeps the record: when,
 * by which role, how many rows of each table, and the audit chain's last hash (so an export made
 * before can be shown to be the trail that was removed).
 *
 * @example
 * await suspendTenant(db, tenantId)
 * await deleteTenant(db, tenantId)
 */
export async function deleteTenant(db: Kysely<any>, tenantId: string, options: DeleteOptions = {}): Promise<{ rows: Record<string, number>; resumed: boolean }> {
  const batchSize = options.batchSize ?? 1000
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new TenantAdminError('batchSize is a whole number of rows, 1 or more')
  return asOperator(db, async (conn, migrations) => {
    const { rows: found } = await sql<{ slug: string | null; is_active: boolean | null; removing: boolean }>`
      select t.slug, t.is_active, exists (select 1 from skills_db.tenant_removals r where r.tenant_id = ${tenantId}) as removing
      from (select 1) one left join public.tenants t on t.id = ${tenantId}`.execute(conn)
    const { slug, is_active: active, removing } = found[0]!
    if (slug === null && !removing) throw new TenantAdminError(`no tenant has the id "${tenantId}": skills-db tenant list shows the ids`)
    if (slug === 'default' && !migrations.includes(CONTRACT_MIGRATION)) {
      throw new TenantAdminError('the default tenant holds what the single-tenant app writes until the contract phase (skills-db contract): it is not deleted before')
    }
    if (active) throw new TenantAdminError(`tenant "${tenantId}" is active: suspend it first (skills-db tenant suspend ${tenantId}), so that no request writes to it while it is removed`)
    // A request that entered the tenant before its suspension may still write to it (an outside review
    // had one append an audit row after the deletion, which then nothing could remove). Nothing enters
    // it now, so once the app's transactions open at this point have ended, nothing writes to it:
    // waited for before the counts are taken, and again once it is listed (it might have been
    // reactivated, and suspended again, in between).
    const app = await appRoleName(conn)
    const inFlightEnded = () => transactionsInFlightEnded(conn, app, 'open when the tenant was suspended or listed for removal (one may still write to it)', options.waitBudgetMs ?? run().lockRetryBudgetMs)
    if (!removing) {
      await inFlightEnded()
      await conn.transaction().execute(async (trx) => {
        // The tenant's row locked while it is listed: a reactivation either committed before (and is
        // seen here) or waits, then finds the listing and is refused. Read once, outside this, it
        // could be reactivated between the check and the listing (an outside review did so).
        await readLocked(trx, ['public.tenants', ...TENANT_TABLES.map((t) => `public.${t.table}`)])
        const { rows: locked } = await sql<{ is_active: boolean }>`select is_active from public.tenants where id = ${tenantId} for update`.execute(trx)
        if (locked[0]?.is_active !== false) throw new TenantAdminError(`tenant "${tenantId}" is active: suspend it first (skills-db tenant suspend ${tenantId}), so that no request writes to it while it is removed`)
        const { rows: head } = await sql<{ seq: string; hash: string }>`
          select seq::text, encode(row_hash, 'hex') as hash from skills_db.audit_chain_heads where tenant_id = ${tenantId}`.execute(trx)
        const counts: Record<string, number> = { tenants: 1 }
        for (const { table } of TENANT_TABLES) {
          counts[table] = (await sql<{ n: number }>`select count(*)::int as n from ${sql.table(`public.${table}`)} where tenant_id = ${tenantId}`.execute(trx)).rows[0]!.n
        }
        await sql`insert into skills_db.tenant_removals (tenant_id, slug) values (${tenantId}, ${slug})`.execute(trx)
        await sql`insert into skills_db.tenant_lifecycle (tenant_id, slug, event, detail)
          values (${tenantId}, ${slug}, 'deletion started', ${JSON.stringify({ auditHead: head[0] ?? null, rows: counts })}::jsonb)`.execute(trx)
      })
    }
    // Listed, it cannot be reactivated; and a transaction open when it was listed (or when it was
    // suspended, waited for above) has ended: nothing writes to it any more.
    await inFlightEnded()
    const rows: Record<string, number> = {}
    for (const { table, key } of [...TENANT_TABLES].reverse()) {
      rows[table] = 0
      for (;;) {
        const n = await inShortTransaction(conn, tenantId, `public.${table}`, async (trx) => {
          const { rows: gone } = await sql<{ n: number }>`with gone as (
              delete from ${sql.table(`public.${table}`)} where tenant_id = ${tenantId} and ${sql.id(key)} in (
                select ${sql.id(key)} from ${sql.table(`public.${table}`)} where tenant_id = ${tenantId} limit ${batchSize})
              returning 1)
            select count(*)::int as n from gone`.execute(trx)
          return gone[0]!.n
        })
        rows[table] += n
        if (n > 0) options.onProgress?.({ table, deleted: rows[table] })
        if (n < batchSize) break
      }
    }
    const total = await inShortTransaction(conn, tenantId, 'public.tenants', async (trx) => {
      // The chain's head locked first: no append can slip in between the last batch and this.
      await sql`select 1 from skills_db.audit_chain_heads where tenant_id = ${tenantId} for update`.execute(trx)
      const { rows: late } = await sql<{ n: number }>`select (select count(*) from public.audit_logs where tenant_id = ${tenantId})::int
        + (select count(*) from public.audit_signatures where tenant_id = ${tenantId})::int as n`.execute(trx)
      if (late[0]!.n > 0) throw new TenantAdminError(`tenant "${tenantId}" gained ${late[0]!.n} audit row(s) while it was deleted: a request still wrote to it; run the delete again`)
      await sql`delete from skills_db.audit_chain_heads where tenant_id = ${tenantId}`.execute(trx)
      await sql`delete from skills_db.tenant_signups where tenant_id = ${tenantId}`.execute(trx)
      await sql`delete from public.tenants where id = ${tenantId}`.execute(trx)
      await sql`delete from skills_db.tenant_removals where tenant_id = ${tenantId}`.execute(trx)
      // The counts taken when the deletion started: a resumed run deleted only what was left.
      const { rows: started } = await sql<{ rows: Record<string, number> | null }>`select detail -> 'rows' as rows from skills_db.tenant_lifecycle
        where tenant_id = ${tenantId} and event = 'deletion started' order by at desc limit 1`.execute(trx)
      const counts = started[0]?.rows ?? rows
      await sql`insert into skills_db.tenant_lifecycle (tenant_id, slug, event, detail)
        values (${tenantId}, ${slug ?? (await removalSlug(trx, tenantId))}, 'deleted', ${JSON.stringify({ rows: counts })}::jsonb)`.execute(trx)
      return counts
    })
    return { rows: total, resumed: removing }
  })
}

async function removalSlug(trx: Kysely<any>, tenantId: string): Promise<string | null> {
  const { rows } = await sql<{ slug: string }>`select slug from skills_db.tenant_removals where tenant_id = ${tenantId}`.execute(trx)
  return rows[0]?.slug ?? null
}

/**
 * One batch, under withLockRetry's short lock timeout and retries (a batch waits for nobody's long
 * transaction), in a transaction that names the tenant being deleted, which is what lets its audit
 * rows go (0020).
 */
function inShortTransaction<T>(conn: Kysely<any>, tenantId: string, table: string, fn: (trx: Kysely<any>) => Promise<T>): Promise<T> {
  return withLockRetry(conn, table, async (trx) => {
    // SET LOCAL (a literal: SET takes no parameter) rather than set_config(), so Citus sends it to the nodes whose triggers read it.
    await sql`set local skills_db.deleting_tenant = ${sql.lit(tenantId)}`.execute(trx)
    return fn(trx)
  })
}
