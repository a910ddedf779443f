import { sql, type Kysely } from 'kysely'
import type { DB } from '../../src/db-types.ts'
import { createDb } from '../../src/connection/create-db.ts'
import { withTenant } from '../../src/tenancy/with-tenant.ts'
import { recordAudit } from '../../src/audit/record-audit.ts'
import { median } from './metrics.ts'
import { BENCH_TENANT_KEY } from './rls-overhead.ts'

/** The bench's audit key: recordAudit signs with it. */
const BENCH_AUDIT_KEY = 'bench-audit:0123456789abcdef0123456789abcdef'

export interface AuditCost {
  /** one withTenant transaction that appends one event through recordAudit (chain + signature) */
  recordMedianMs: number
  /** the same transaction inserting the same row into a copy of audit_logs with no trigger and no signature: what an append cost before 0011 */
  plainMedianMs: number
  /** the median of the rounds' own ratios */
  ratio: number
  /** appends per second, `connections` clients appending to one tenant (they take turns on its chain head) */
  oneTenantPerSecond: number
  /** the same clients appending to the copy without the chain */
  plainPerSecond: number
  throughputRatio: number
}

/**
 * What the tamper-evident audit trail costs an append: recordAudit against a plain insert of the
 * same row, one client in alternating order, then `connections` clients for `seconds` each, all
 * in one tenant (the worst case: one tenant's appends take turns).
 */
export async function measureAuditCost(adminUrl: string, appUrl: string, tenant: string, { rounds = 400, connections = 4, seconds = 3 } = {}): Promise<AuditCost> {
  const admin = createDb<any>(adminUrl, { max: 1 })
  const appRole = decodeURIComponent(new URL(appUrl).username)
  // The copy: audit_logs' columns and defaults, its row security, none of its triggers.
  await sql.raw(`drop table if exists public.audit_plain;
    create table public.audit_plain (like public.audit_logs including defaults);
    alter table public.audit_plain add primary key (id);
    alter table public.audit_plain enable row level security;
    create policy tenant_isolation on public.audit_plain using (tenant_id = nullif(tenant_context.current_tenant(), ''));
    grant select, insert on public.audit_plain to ${appRole}`).execute(admin)
  const open = () => createDb<DB>(appUrl, { max: 1, tenantKey: BENCH_TENANT_KEY, auditKey: BENCH_AUDIT_KEY })
  const event = (i: number) => ({ actorId: 'u1', action: 'skill.update', resourceType: 'skill', resourceId: `s${i}`, metadata: { round: i } })
  const record = (db: Kysely<DB>, i: number) => withTenant(db, tenant, (trx) => recordAudit(trx, event(i)))
  const plain = (db: Kysely<DB>, i: number) => withTenant(db, tenant, async (trx) => {
    const e = event(i)
    await sql`insert into audit_plain (actor_id, action, resource_type, resource_id, metadata)
      values (${e.actorId}, ${e.action}, ${e.resourceType}, ${e.resourceId}, ${JSON.stringify(e.metadata)})`.execute(trx)
  })
  try {
    const app = open()
    const times: [number[], number[]] = [[], []]
    try {
      for (let i = 0; i < rounds; i++) {
        const arms = [() => timed(() => record(app, i)).then((ms) => times[0].push(ms)), () => timed(() => plain(app, i)).then((ms) => times[1].push(ms))]
        for (let k = 0; k < 2; k++) await arms[(i + k) % 2]!()
      }
    } finally {
      await app.destroy()
    }
    const [chained, unchained] = times
    const oneTenantPerSecond = await throughput(open, record, connections, seconds)
    const plainPerSecond = await throughput(open, plain, connections, seconds)
    return {
      recordMedianMs: median(chained),
      plainMedianMs: median(unchained),
      ratio: median(chained.map((c, i) => c / unchained[i]!)),
      oneTenantPerSecond,
      plainPerSecond,
      throughputRatio: oneTenantPerSecond / plainPerSecond,
    }
  } finally {
    await sql`drop table if exists public.audit_plain`.execute(admin).catch(() => {})
    await admin.destroy()
  }
}

async function throughput(open: () => Kysely<DB>, append: (db: Kysely<DB>, i: number) => Promise<unknown>, connections: number, seconds: number): Promise<number> {
  const dbs = Array.from({ length: connections }, open)
  let done = 0
  const until = performance.now() + seconds * 1000
  try {
    await Promise.all(dbs.map(async (db, c) => {
      for (let i = c; performance.now() < until; i += connections) {
        await append(db, i)
        done++
      }
    }))
  } finally {
    await Promise.all(dbs.map((db) => db.destroy()))
  }
  return done / seconds
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now()
  await fn()
  return performance.now() - start
}

export function formatAuditCost(a: AuditCost): string {
  return `  one append (one client): recordAudit ${a.recordMedianMs.toFixed(3)} ms vs plain insert ${a.plainMedianMs.toFixed(3)} ms = ${a.ratio.toFixed(2)}×\n` +
    `  appends/s, one tenant, concurrent clients: ${a.oneTenantPerSecond.toFixed(0)} vs ${a.plainPerSecond.toFixed(0)} = ${a.throughputRatio.toFixed(2)}×`
}
