import { sql, type Kysely } from 'kysely'
import pg from 'pg'
import { createDb } from '../../src/connection/create-db.ts'
import type { DB } from '../../src/db-types.ts'
import { signTenantContext, parseTenantKey } from '../../src/tenancy/tenant-key.ts'
import { withTenant } from '../../src/tenancy/with-tenant.ts'
import { startPgBouncer } from '../../fixtures/pgbouncer.ts'
import { median } from './metrics.ts'
import { BENCH_TENANT_KEY } from './rls-overhead.ts'

/**
 * What a whole tenant-scoped request costs the app (issue 18), three ways, side by side in one
 * run, each as the app role through a pool of 10 from createDb:
 * - plain: the statements with the tenant filter written out, autocommit, on copies of the tables
 *   without row security (schema `rc_plain`);
 * - classic: the usual RLS pattern, BEGIN; set_config('app.tenant', t, true); the statements;
 *   COMMIT, on copies whose policies read that setting (schema `rc_classic`);
 * - withTenant: the statements inside withTenant, on the real tables.
 * For a point lookup and for a request of 4 statements (3 reads and an update), at 1, 8 and 32
 * concurrent callers; rounds rotate the order of the variants, and each figure is the median of
 * the rounds'.
 */
export interface RequestCost {
  request: string
  callers: number
  /** Through PgBouncer in transaction mode (10 server connections), where it is installed. */
  pooler?: true
  variants: Record<Variant, { p50Ms: number; p99Ms: number; perSecond: number }>
}
type Variant = 'plain' | 'classic' | 'withTenant'
const VARIANTS: Variant[] = ['plain', 'classic', 'withTenant']

/** Server time with equal round trips: one pipelined round trip per transaction, 2 clients. */
export interface ServerTime {
  /** BEGIN; enter(); the lookup under row security; COMMIT (as withTenant's session knows its challenge) */
  enteredPerSecond: number
  /** BEGIN; set_config(); the lookup with the filter written out, on the copy without row security; COMMIT */
  explicitPerSecond: number
  ratio: number
}

type Statements = (db: Kysely<any>, schema: string | null, tenant: string, n: number) => Promise<unknown>

// Kysely's query builder, the same for all three (as an app on Kysely writes them): the plain
// variant names the tenant, the other two leave it to row security. Their statements are
// session-safe (src/tenancy/session-safe-statements.ts), so withTenant ends them with COMMIT alone;
// a statement written with `sql` adds withTenant's end check and clean-up (about 35 µs of the
// server's; docs/design/tenant-context.md).
const table = (schema: string | null, name: string) => (schema ? `${schema}.${name}` : name)
const scoped = <Q extends { where: (...a: any[]) => Q }>(q: Q, schema: string | null, tenant: string): Q => schema === 'rc_plain' ? q.where('tenant_id', '=', tenant) : q

const REQUESTS: { name: string; run: Statements }[] = [
  {
    name: 'point lookup by slug',
    run: (db, s, t, n) => scoped(db.selectFrom(table(s, 'skills')).selectAll(), s, t).where('slug', '=', `skill-${n}`).execute(),
  },
  {
    name: '4 statements (3 reads, 1 update)',
    run: async (db, s, t, n) => {
      const slug = `skill-${n}`
      const skill = await scoped(db.selectFrom(table(s, 'skills')).select(['id', 'author_id']), s, t).where('slug', '=', slug).executeTakeFirst() as { id: string; author_id: string } | undefined
      await scoped(db.selectFrom(table(s, 'skills')).select(['id', 'name', 'total_uses']), s, t).orderBy('total_uses', 'desc').limit(10).execute()
      await scoped(db.selectFrom(table(s, 'users')).select(['id', 'email']), s, t).where('id', '=', skill?.author_id ?? '').execute()
      await scoped(db.updateTable(table(s, 'skills')).set((eb: any) => ({ total_uses: eb('total_uses', '+', 1) })), s, t).where('slug', '=', slug).execute()
    },
  },
]

/**
 * Copies of skills and users: without row security, and with the classic policy. Each with the
 * real table's indexes (LIKE … INCLUDING ALL), so that every variant's planner weighs the same ones
 * (until 2b597e7 the copies had 3 of skills' 6 indexes and 1 of users', which flattered the two
 * copies by a few µs of planning a statement).
 */
async function createCopies(admin: Kysely<any>, appRole: string): Promise<void> {
  for (const [schema, policy] of [['rc_plain', null], ['rc_classic', `tenant_id = current_setting('app.tenant', true)`]] as const) {
    await sql.raw(`drop schema if exists ${schema} cascade; create schema ${schema};
      create table ${schema}.skills (like public.skills including all); insert into ${schema}.skills select * from public.skills;
      create table ${schema}.users (like public.users including all); insert into ${schema}.users select * from public.users;
      analyze ${schema}.skills; analyze ${schema}.users;
      grant usage on schema ${schema} to ${appRole}; grant select, update on all tables in schema ${schema} to ${appRole};
      ${policy ? `alter table ${schema}.skills enable row level security; alter table ${schema}.users enable row level security;
        create policy t on ${schema}.skills using (${policy}); create policy t on ${schema}.users using (${policy});` : ''}`).execute(admin)
  }
}

export async function measureRequestCost(adminUrl: string, appUrl: string, tenant: string, skills: number,
  { callers = [1, 8, 32], roundMs = 1500, rounds = 3 }: { callers?: number[]; roundMs?: number; rounds?: number } = {}): Promise<{ requests: RequestCost[]; serverTime: ServerTime; pooler?: string }> {
  const admin = createDb<any>(adminUrl, { max: 1 })
  const appRole = decodeURIComponent(new URL(appUrl).username)
  try {
    await createCopies(admin, appRole)
    const requests: RequestCost[] = []
    for (const request of REQUESTS) {
      for (const c of callers) requests.push(await measureSideBySide(appUrl, tenant, skills, request, c, { roundMs, rounds }))
    }
    // The same through a transaction-mode pooler: withTenant asks for its challenge per transaction there.
    const bouncer = await startPgBouncer(appUrl, { poolSize: 10 })
    let pooler: string | undefined
    if ('notRun' in bouncer) {
      pooler = `not run: ${bouncer.notRun}`
    } else {
      try {
        requests.push({ ...(await measureSideBySide(bouncer.url, tenant, skills, REQUESTS[0]!, 8, { roundMs, rounds })), pooler: true })
      } finally {
        await bouncer.stop()
      }
    }
    const serverTime = await measureServerTime(appUrl, tenant, skills, rounds, roundMs)
    await sql.raw('drop schema rc_plain cascade; drop schema rc_classic cascade').execute(admin)
    return { requests, serverTime, ...(pooler ? { pooler } : {}) }
  } finally {
    await admin.destroy()
  }
}

/** The three variants for one request at `c` callers, each through a pool of 10 of its own, rounds in rotating order. */
async function measureSideBySide(url: string, tenant: string, skills: number, request: (typeof REQUESTS)[number], c: number,
  { roundMs, rounds }: { roundMs: number; rounds: number }): Promise<RequestCost> {
  const pools: Record<Variant, Kysely<DB>> = {
    plain: createDb<DB>(url, { max: 10 }),
    classic: createDb<DB>(url, { max: 10 }),
    withTenant: createDb<DB>(url, { max: 10, tenantKey: BENCH_TENANT_KEY, pipelinedWithTenant: true }),
  }
  const arms: Record<Variant, (run: Statements, n: number) => Promise<unknown>> = {
    plain: (run, n) => run(pools.plain, 'rc_plain', tenant, n),
    classic: (run, n) => pools.classic.transaction().execute(async (trx) => {
      await sql`select set_config('app.tenant', ${tenant}, true)`.execute(trx)
      await run(trx, 'rc_classic', tenant, n)
    }),
    withTenant: (run, n) => withTenant(pools.withTenant, tenant, (trx) => run(trx, null, tenant, n)),
  }
  try {
    const perRound: Record<Variant, { p50Ms: number; p99Ms: number; perSecond: number }[]> = { plain: [], classic: [], withTenant: [] }
    // One warm-up pass per variant: connections opened, plans cached, challenges asked.
    for (const v of VARIANTS) await drive(() => arms[v](request.run, 1), c, 200)
    for (let round = 0; round < rounds; round++) {
      for (let k = 0; k < VARIANTS.length; k++) {
        const v = VARIANTS[(round + k) % VARIANTS.length]!
        let i = 0
        perRound[v].push(await drive(() => arms[v](request.run, 1 + ((i++ * 7919) % skills)), c, roundMs))
      }
    }
    const med = (v: Variant) => ({
      p50Ms: median(perRound[v].map((r) => r.p50Ms)),
      p99Ms: median(perRound[v].map((r) => r.p99Ms)),
      perSecond: median(perRound[v].map((r) => r.perSecond)),
    })
    return { request: request.name, callers: c, variants: { plain: med('plain'), classic: med('classic'), withTenant: med('withTenant') } }
  } finally {
    await Promise.all(Object.values(pools).map((p) => p.destroy()))
  }
}

/** `callers` loops calling `request` for `ms`: each request's latency, and the rate they completed at. */
async function drive(request: () => Promise<unknown>, callers: number, ms: number): Promise<{ p50Ms: number; p99Ms: number; perSecond: number }> {
  const latencies: number[] = []
  const start = performance.now()
  const until = start + ms
  await Promise.all(Array.from({ length: callers }, async () => {
    while (performance.now() < until) {
      const t = performance.now()
      await request()
      latencies.push(performance.now() - t)
    }
  }))
  const elapsed = performance.now() - start
  latencies.sort((a, b) => a - b)
  return { p50Ms: latencies[Math.floor(latencies.length / 2)]!, p99Ms: latencies[Math.floor(latencies.length * 0.99)]!, perSecond: latencies.length / (elapsed / 1000) }
}

/**
 * pgbench's way, in Node (pgbench cannot sign): 2 clients of their own, each sending a whole
 * transaction in one pipelined round trip, so both variants make the same round trips and the
 * difference is the server's work: enter() against set_config(), the policy against the filter.
 */
async function measureServerTime(appUrl: string, tenant: string, skills: number, rounds: number, roundMs: number): Promise<ServerTime> {
  const key = parseTenantKey(BENCH_TENANT_KEY, 'bench key')
  const clients = await Promise.all([0, 1].map(async () => {
    const client = new pg.Client({ connectionString: appUrl, pipeline: true })
    client.on('error', () => {})
    await client.connect()
    const { rows } = await client.query<{ c: string }>('select tenant_context.session_challenge() as c')
    return { client, challenge: rows[0]!.c }
  }))
  const entered = async (s: (typeof clients)[number], n: number) => {
    const [, { rows }] = await Promise.all([
      s.client.query('begin'),
      s.client.query<{ next: string }>('select tenant_context.enter($1::text, $2::text, $3::text) as next', [tenant, s.challenge, signTenantContext(key, tenant, s.challenge)]),
      s.client.query('select * from skills where slug = $1', [`skill-${n}`]),
      s.client.query('commit'),
    ])
    s.challenge = rows[0]!.next
  }
  const explicit = async (s: (typeof clients)[number], n: number) => {
    await Promise.all([
      s.client.query('begin'),
      s.client.query(`select set_config('app.tenant', $1, true)`, [tenant]),
      s.client.query('select * from rc_plain.skills where tenant_id = $1 and slug = $2', [tenant, `skill-${n}`]),
      s.client.query('commit'),
    ])
  }
  const rate = async (tx: typeof entered) => {
    let count = 0
    const start = performance.now()
    await Promise.all(clients.map(async (s) => {
      let i = 0
      while (performance.now() - start < roundMs) { await tx(s, 1 + ((i++ * 7919) % skills)); count++ }
    }))
    return count / ((performance.now() - start) / 1000)
  }
  try {
    const e: number[] = []
    const x: number[] = []
    await rate(entered)
    await rate(explicit)
    for (let round = 0; round < rounds; round++) {
      if (round % 2) { x.push(await rate(explicit)); e.push(await rate(entered)) } else { e.push(await rate(entered)); x.push(await rate(explicit)) }
    }
    return { enteredPerSecond: median(e), explicitPerSecond: median(x), ratio: median(e.map((v, i) => v / x[i]!)) }
  } finally {
    await Promise.all(clients.map((s) => s.client.end()))
  }
}

/** The "per-request cost" table, as the bench prints it. */
export function formatRequestCost({ requests, serverTime, pooler }: { requests: RequestCost[]; serverTime: ServerTime; pooler?: string }): string {
  const f = (n: number, d = 3) => n.toFixed(d)
  const lines: string[] = []
  for (const r of requests) {
    const { plain, classic, withTenant: wt } = r.variants
    lines.push(`  ${r.request}, ${r.callers} caller(s)${r.pooler ? ', through PgBouncer (transaction mode, 10 server connections)' : ''}:`)
    for (const [name, v] of [['plain (autocommit, filter written out)', plain], ['classic (BEGIN; set_config; …; COMMIT)', classic], ['withTenant', wt]] as const) {
      lines.push(`    ${name.padEnd(40)} p50 ${f(v.p50Ms)} ms  p99 ${f(v.p99Ms)} ms  ${Math.round(v.perSecond).toLocaleString('en')} req/s`)
    }
    lines.push(`    withTenant / classic: p50 ${f(wt.p50Ms / classic.p50Ms, 2)}× (goal ≤ 1.00×), throughput ${f(wt.perSecond / classic.perSecond, 2)}× (goal ≥ 1.00×); ` +
      `withTenant / plain: p50 ${f(wt.p50Ms / plain.p50Ms, 2)}× (moonshot ≤ 2.50×)`)
  }
  if (pooler) lines.push(`  through PgBouncer: ${pooler}`)
  lines.push(`  server time, equal round trips (2 clients, a transaction per pipelined round trip): entered ${Math.round(serverTime.enteredPerSecond).toLocaleString('en')} tx/s, ` +
    `explicit ${Math.round(serverTime.explicitPerSecond).toLocaleString('en')} tx/s = ${f(serverTime.ratio, 2)}× (goal ≥ 0.80×)`)
  return lines.join('\n')
}
