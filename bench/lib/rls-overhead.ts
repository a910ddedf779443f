import { sql, type Kysely, type RawBuilder } from 'kysely'
import type { DB } from '../../src/db-types.ts'
import { createDb } from '../../src/connection/create-db.ts'
import { migrateToLatest } from '../../src/migrator/migrate.ts'
import { withTenant } from '../../src/tenancy/with-tenant.ts'
import { median } from './metrics.ts'

/** The tenant key of the bench's copies: withTenant signs with it, the migration run stores it. */
export const BENCH_TENANT_KEY = 'bench:0123456789abcdef0123456789abcdef'

export interface QueryOverhead {
  query: string
  /** the app role inside withTenant, row security on */
  rlsMedianMs: number
  /** the same role inside withTenant, the same query with an explicit tenant filter on an identical table without row security */
  plainMedianMs: number
  /** rls / plain, the median of the rounds' own ratios: what row security adds to the query */
  ratio: number
  /** the superuser, a plain transaction, the explicit filter on the real table (what earlier benches compared with) */
  superuserMedianMs: number
  superuserRatio: number
  usesIndex: boolean
  plan: string
}

const since = (n: number) => new Date(Date.now() - (60 + (n % 60)) * 60_000)

/** Each query as the app writes it under row security, and with the tenant filter written out, on `schema`'s tables. */
const QUERIES: { name: string; rls: (n: number) => RawBuilder<unknown>; filter: (schema: string, tenant: string, n: number) => RawBuilder<unknown> }[] = [
  {
    name: 'point lookup by slug',
    rls: (n) => sql`select * from skills where slug = ${`skill-${n}`}`,
    filter: (s, t, n) => sql`select * from ${sql.table(`${s}.skills`)} where tenant_id = ${t} and slug = ${`skill-${n}`}`,
  },
  {
    name: "a tenant's top skills by uses",
    rls: () => sql`select id, name, total_uses from skills order by total_uses desc limit 10`,
    filter: (s, t) => sql`select id, name, total_uses from ${sql.table(`${s}.skills`)} where tenant_id = ${t} order by total_uses desc limit 10`,
  },
  {
    name: 'usage counts per skill over a time range',
    // The cut-off is a bound timestamp, as app code passes it: `timestamp >= timestamp` is
    // leakproof, so under RLS it shares the (tenant_id, created_at) index with the policy.
    // (A timestamptz expression such as now() - interval is not, and would be filtered after.)
    rls: (n) => sql`select skill_id, count(*) from usage_events
      where created_at >= ${since(n)} group by skill_id order by 2 desc limit 20`,
    filter: (s, t, n) => sql`select skill_id, count(*) from ${sql.table(`${s}.usage_events`)}
      where tenant_id = ${t} and created_at >= ${since(n)} group by skill_id order by 2 desc limit 20`,
  },
  {
    name: 'the same, as an app writes it: now() - interval',
    // Before the contract phase created_at is timestamp, and timestamp > timestamptz is not
    // leakproof: row security applies it after the scan. After it, created_at is timestamptz.
    rls: () => sql`select skill_id, count(*) from usage_events
      where created_at > now() - interval '3 days' group by skill_id order by 2 desc limit 20`,
    filter: (s, t) => sql`select skill_id, count(*) from ${sql.table(`${s}.usage_events`)}
      where tenant_id = ${t} and created_at > now() - interval '3 days' group by skill_id order by 2 desc limit 20`,
  },
]

/**
 * Copies of the tables the queries read, with the same rows and the indexes the queries use, and
 * no row security: the baseline that differs from the real tables in row security alone.
 */
async function createPlainCopies(admin: Kysely<any>, appRole: string): Promise<void> {
  await sql.raw(`drop schema if exists rls_free cascade; create schema rls_free;
    create table rls_free.skills as select * from public.skills;
    create unique index on rls_free.skills (tenant_id, slug); create index on rls_free.skills (tenant_id, total_uses);
    create table rls_free.usage_events as select * from public.usage_events;
    create index on rls_free.usage_events (tenant_id, created_at);
    analyze rls_free.skills; analyze rls_free.usage_events;
    grant usage on schema rls_free to ${appRole}; grant select on all tables in schema rls_free to ${appRole}`).execute(admin)
}

/**
 * What row security costs the app role's tenant-scoped reads. Each round runs the query three
 * ways, in a rotating order so that none always runs on a machine another left warm or cold:
 * through withTenant under row security; through withTenant with the tenant filter written out on
 * the copies without row security (same role, same transaction: the difference is the policy);
 * and as the superuser with the filter, in a plain transaction (the comparison of earlier benches).
 */
export async function measureRlsOverhead(adminUrl: string, appUrl: string, tenant: string, skills: number, rounds = 600): Promise<QueryOverhead[]> {
  const admin = createDb<any>(adminUrl, { max: 1 })
  // The database's keys are stored by the migration run (variants.ts) with this same key.
  const app = createDb<DB>(appUrl, { max: 1, tenantKey: BENCH_TENANT_KEY })
  try {
    await createPlainCopies(admin, decodeURIComponent(new URL(appUrl).username))
    const out: QueryOverhead[] = []
    for (const q of QUERIES) {
      const times: [number[], number[], number[]] = [[], [], []]
      for (let i = 0; i < rounds; i++) {
        const n = 1 + ((i * 7919) % skills)
        // Only the query is timed, inside each transaction.
        const arms = [
          () => withTenant(app, tenant, async (trx) => void times[0].push(await timed(() => q.rls(n).execute(trx)))),
          () => withTenant(app, tenant, async (trx) => void times[1].push(await timed(() => q.filter('rls_free', tenant, n).execute(trx)))),
          () => admin.transaction().execute(async (trx) => void times[2].push(await timed(() => q.filter('public', tenant, n).execute(trx)))),
        ]
        for (let k = 0; k < arms.length; k++) await arms[(i + k) % arms.length]!()
      }
      const plan = await withTenant(app, tenant, async (trx) => {
        const { rows } = await sql<{ 'QUERY PLAN': string }>`explain ${q.rls(1)}`.execute(trx)
        return rows.map((r) => r['QUERY PLAN']).join('\n')
      })
      const [rls, plain, superuser] = times
      // The median of the rounds' own ratios: a round shares the machine's state of the moment, so
      // drift over the run (another process, a checkpoint) cancels out instead of moving one side.
      out.push({
        query: q.name,
        rlsMedianMs: median(rls),
        plainMedianMs: median(plain),
        ratio: median(rls.map((r, i) => r / plain[i]!)),
        superuserMedianMs: median(superuser),
        superuserRatio: median(rls.map((r, i) => r / superuser[i]!)),
        usesIndex: /Index/.test(plan),
        plan,
      })
    }
    await sql`drop schema rls_free cascade`.execute(admin)
    return out
  } finally {
    await Promise.all([admin.destroy(), app.destroy()])
  }
}

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const start = performance.now()
  await fn()
  return performance.now() - start
}

/** One line per query, as the bench prints them. */
export function formatRlsOverhead(q: QueryOverhead): string {
  return `  ${q.query.padEnd(42)} ${q.rlsMedianMs.toFixed(3)} ms vs ${q.plainMedianMs.toFixed(3)} ms = ${q.ratio.toFixed(2)}×` +
    `  (superuser: ${q.superuserMedianMs.toFixed(3)} ms, ${q.superuserRatio.toFixed(2)}×)  index used: ${q.usesIndex}`
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
