import { sql, type RawBuilder } from 'kysely'
import type { DB } from '../../src/db-types.ts'
import { createDb } from '../../src/connection/create-db.ts'
import { migrateToLatest } from '../../src/migrator/migrate.ts'
import { withTenant } from '../../src/tenancy/with-tenant.ts'
import { median } from './metrics.ts'

export interface QueryOverhead {
  query: string
  rlsMedianMs: number
  filterMedianMs: number
  ratio: number
  usesIndex: boolean
  plan: string
}

const since = (n: number) => new Date(Date.now() - (60 + (n % 60)) * 60_000)

const QUERIES: { name: string; rls: (n: number) => RawBuilder<unknown>; filter: (tenant: string, n: number) => RawBuilder<unknown> }[] = [
  {
    name: 'point lookup by slug',
    rls: (n) => sql`select * from skills where slug = ${`skill-${n}`}`,
    filter: (t, n) => sql`select * from skills where tenant_id = ${t} and slug = ${`skill-${n}`}`,
  },
  {
    name: "a tenant's top skills by uses",
    rls: () => sql`select id, name, total_uses from skills order by total_uses desc limit 10`,
    filter: (t) => sql`select id, name, total_uses from skills where tenant_id = ${t} order by total_uses desc limit 10`,
  },
  {
    name: 'usage counts per skill over a time range',
    // The cut-off is a bound timestamp, as app code passes it: `timestamp >= timestamp` is
    // leakproof, so under RLS it shares the (tenant_id, created_at) index with the policy.
    // (A timestamptz expression such as now() - interval is not, and would be filtered after.)
    rls: (n) => sql`select skill_id, count(*) from usage_events
      where created_at >= ${since(n)} group by skill_id order by 2 desc limit 20`,
    filter: (t, n) => sql`select skill_id, count(*) from usage_events
      where tenant_id = ${t} and created_at >= ${since(n)} group by skill_id order by 2 desc limit 20`,
  },
]

/**
 * The same tenant-scoped reads through withTenant as the application role (RLS) and as the
 * superuser with an explicit tenant_id filter (no RLS), interleaved so both see the same machine.
 */
export async function measureRlsOverhead(adminUrl: string, appUrl: string, tenant: string, skills: number, rounds = 600): Promise<QueryOverhead[]> {
  const admin = createDb<any>(adminUrl, { max: 1 })
  const app = createDb<DB>(appUrl, { max: 1 })
  try {
    const out: QueryOverhead[] = []
    for (const q of QUERIES) {
      const rlsMs: number[] = []
      const filterMs: number[] = []
      for (let i = 0; i < rounds; i++) {
        const n = 1 + ((i * 7919) % skills)
        // Only the query is timed, inside each transaction: the ratio is the cost of the policy.
        const viaRls = () => withTenant(app, tenant, async (trx) => {
          const start = performance.now()
          await q.rls(n).execute(trx)
          rlsMs.push(performance.now() - start)
        })
        const viaFilter = () => admin.transaction().execute(async (trx) => {
          const start = performance.now()
          await q.filter(tenant, n).execute(trx)
          filterMs.push(performance.now() - start)
        })
        // Each goes first in every other round: the first of a pair runs on a machine the other left colder.
        if (i % 2 === 0) await viaRls().then(viaFilter)
        else await viaFilter().then(viaRls)
      }
      const plan = await withTenant(app, tenant, async (trx) => {
        const { rows } = await sql<{ 'QUERY PLAN': string }>`explain ${q.rls(1)}`.execute(trx)
        return rows.map((r) => r['QUERY PLAN']).join('\n')
      })
      const rls = median(rlsMs)
      const filter = median(filterMs)
      // The median of the rounds' own ratios: a pair shares the machine's state of the moment, so
      // drift over the run (another process, a checkpoint) cancels out instead of moving one side.
      const ratio = median(rlsMs.map((r, i) => r / filterMs[i]!))
      out.push({ query: q.name, rlsMedianMs: rls, filterMedianMs: filter, ratio, usesIndex: /Index/.test(plan), plan })
    }
    return out
  } finally {
    await Promise.all([admin.destroy(), app.destroy()])
  }
}

/** What every app boot pays on an up-to-date database: a fresh pool, migrateToLatest(), close. */
export async function measureNoopBoot(url: string, runs = 15): Promise<{ medianMs: number; outcomes: string[] }> {
  const times: number[] = []
  const outcomes = new Set<string>()
  for (let i = 0; i < runs; i++) {
    const start = performance.now()
    const db = createDb<any>(url, { max: 2 })
    const outcome = await migrateToLatest(db)
    await db.destroy()
    times.push(performance.now() - start)
    outcomes.add(outcome.status)
  }
  return { medianMs: median(times), outcomes: [...outcomes] }
}
