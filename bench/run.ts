/**
 * npm run bench -- [--scale 1] [--connections 4] [--load-seconds 3] [--out bench-results] [--keep-snapshot] [--only citus|request-cost|tenant-lifecycle]
 *
 * Builds a copy of the production database, runs the single-tenant app against it, and migrates
 * it twice on fresh copies while the app runs: (a) skills-db's migrateToLatest, (b) the plan's SQL
 * in one transaction; then on managed-hosting copies (c, d: d through the open phase), and the
 * open and contract phases under the new app's load (e, f) with the audit trail's cost per append,
 * and distribute on a Citus cluster of its own under the same load (g; not run without Citus).
 * `--only citus` runs g alone; `--only request-cost` the per-request cost of withTenant against the
 * classic SET LOCAL pattern and a plain query, on a migrated copy (no migration under load);
 * `--only tenant-lifecycle` the tenant export (peak RSS) and delete (beside the new app's load) on an opened copy.
 * Prints side-by-side tables, writes results.json and chart.svg.
 * Uses TEST_DATABASE_URL's server (an admin URL, never production) or an embedded PostgreSQL.
 */
import { mkdirSync, writeFileSync } from 'node:fs'
import { parseArgs } from 'node:util'
import { sql } from 'kysely'
import { createDb } from '../src/connection/create-db.ts'
import { migrateContract, migrateOpen, type MigrationOutcome } from '../src/migrator/migrate.ts'
import { adminQuery, createScratchDatabase, dropScratchDatabase } from '../src/connection/scratch-database.ts'
import { LEGACY_SQL } from '../fixtures/legacy.ts'
import { startTestServer } from '../fixtures/test-server.ts'
import { now } from '../fixtures/clock.ts'
import { renderChart, type ChartSeries } from './lib/chart.ts'
import { bins, errorsByMessage, latencyStats, longestStall, type LatencyStats } from './lib/metrics.ts'
import { startOldAppWorker } from '../fixtures/load-worker.ts'
import { countsAt, fillProductionCopy, type Counts } from '../fixtures/production-copy.ts'
import { formatRlsOverhead, measureNoopBoot, measureRlsOverhead } from './lib/rls-overhead.ts'
import { runPlan, runSkillsDb, type MigrationRun } from './lib/variants.ts'
import { formatAuditCost, measureAuditCost } from './lib/audit-cost.ts'
import { formatLockStall, measureLockStall } from './lib/lock-stall.ts'
import { formatTenantLifecycle, measureTenantLifecycle } from './lib/tenant-lifecycle.ts'
import { formatDistributeUnderLoad, measureDistributeUnderLoad } from './lib/citus-distribute.ts'
import { underNewAppLoad } from './lib/under-new-app-load.ts'
import { formatRequestCost, measureRequestCost } from './lib/request-cost.ts'

const { values: args } = parseArgs({
  options: {
    scale: { type: 'string', default: '1' },
    connections: { type: 'string', default: '4' },
    'load-seconds': { type: 'string', default: '3' },
    out: { type: 'string', default: 'bench-results' },
    'keep-snapshot': { type: 'boolean', default: false },
    only: { type: 'string' },
  },
})
const scale = Number(args.scale)
const connections = Number(args.connections)
const leadMs = Number(args['load-seconds']) * 1000
if (!(scale > 0) || !(connections > 0) || !(leadMs >= 0)) {
  console.error('error: --scale, --connections and --load-seconds must be positive numbers')
  process.exit(1)
}
if (args.only !== undefined && args.only !== 'citus' && args.only !== 'request-cost' && args.only !== 'tenant-lifecycle') {
  console.error(`error: --only takes "citus" (distribute on Citus under load), "request-cost" (withTenant against the classic pattern) or "tenant-lifecycle" (tenant export and delete), not "${args.only}"`)
  process.exit(1)
}

const TABLES = ['users', 'skills', 'ratings', 'usage_events', 'skill_versions', 'skill_embeddings', 'skill_reviews', 'api_keys', 'site_settings']
const tag = `skills_${process.pid}_bn`
const appRole = `${tag}_app`
// The managed-hosting profile: a NOSUPERUSER owner (as RDS/Cloud SQL/Azure/Supabase give) and a plain DML role.
const ownerRole = `${tag}_own`
const plainRole = `${tag}_old`
const snapshot = `skills_bench_snapshot_${String(scale).replace(/\W/g, '_')}`

interface VariantResult {
  variant: string
  firstTry: boolean
  /** tries until one succeeded (each on a fresh copy); the figures below are the last try's */
  tries: number
  failedTries: string[]
  error?: string
  wallMs: number
  steps: { name: string; ms: number }[]
  walBytes: number
  sizeBefore: Record<string, number>
  sizeAfter: Record<string, number>
  latency: { before: LatencyStats; during: LatencyStats; after: LatencyStats }
  longestStallMs: number
  appErrors: Record<string, number>
  /** select-by-slug lookups that found nothing (every slug looked up exists) */
  emptyLookups: number
  acknowledged: number
  missingRows: number
  slugP50: { before: number; after: number; ratio: number }
}

const server = await startTestServer({ durable: true })
const admin = server.adminUrl
const created: string[] = []
let cleaned = false
async function cleanup() {
  if (cleaned) return
  cleaned = true
  for (const name of created) await dropScratchDatabase(admin, name).catch(() => {})
  if (!args['keep-snapshot']) await dropScratchDatabase(admin, snapshot).catch(() => {})
  for (const role of [appRole, plainRole, ownerRole]) await adminQuery(admin, `drop role if exists ${role}`).catch(() => {})
  await server.stop()
}
process.once('SIGINT', () => void cleanup().finally(() => process.exit(130)))
process.once('SIGTERM', () => void cleanup().finally(() => process.exit(143)))
process.once('uncaughtException', (error) => {
  console.error(`error: ${error.message}`)
  void cleanup().finally(() => process.exit(1))
})

try {
  const counts = countsAt(scale)
  if (args.only === 'citus') {
    const citus = await measureDistributeUnderLoad(counts, { connections, leadMs, appRole })
    console.log(`\ndistribute on Citus under the new app's load, scale ${scale}:\n${formatDistributeUnderLoad(citus)}`)
    mkdirSync(args.out!, { recursive: true })
    writeFileSync(`${args.out}/citus.json`, JSON.stringify({ scale, connections, counts, citusDistribute: citus }, null, 2))
  } else if (args.only === 'request-cost') {
    await requestCostAlone(counts)
  } else if (args.only === 'tenant-lifecycle') {
    await tenantLifecycleAlone(counts)
  } else {
    await everything(counts)
  }
} finally {
  await cleanup()
}

async function everything(counts: Counts): Promise<void> {
  await ensureSnapshot(counts)
  console.log(`server: ${server.source}; scale ${scale} (${counts.usage_events} usage_events); ${connections} app connections`)
  const a = await untilSuccess('a: skills-db', (url) => runSkillsDb(url, appRole), counts)
  // The plan's way deadlocks with the app on most tries; after 3 plain tries it is forced through.
  const b = await untilSuccess('b: plan SQL', (url, attempt) => runPlan(url, { forced: attempt > 3 }), counts)
  const extra = await measureMigratedReads(a.url, counts)
  // Managed hosting: no superuser anywhere. The owner migrates; the old app runs as the owner, then as a plain role.
  await adminQuery(admin, `create role ${ownerRole} login password 'bench' nosuperuser nobypassrls createrole`)
  await adminQuery(admin, `create role ${plainRole} login password 'bench' nosuperuser nobypassrls`)
  const c = await untilSuccess('c: managed, app as owner', (url) => runSkillsDb(as(url, ownerRole), appRole), counts, managedCopy(ownerRole))
  // The plain role's old app can stay through the open phase (it is confined to the default tenant): expand and open under its load.
  const d = await untilSuccess('d: managed, plain role, +open', (url) => runSkillsDb(as(url, ownerRole), appRole, { open: true }), counts, managedCopy(plainRole))
  // The old-app policies apply to the owner and old-app roles only: the app role's queries must not pay for them.
  const managedRls = await measureRlsOverhead(c.url, as(c.url, appRole), await defaultTenant(c.url), counts.skills)
  // The open and contract phases, once the old app is retired, under the new app's load.
  const phases = await measureOpenAndContract(counts)
  const citus = await measureDistributeUnderLoad(counts, { connections, leadMs, appRole })
  report([a.result, b.result], extra)
  reportManaged([c.result, d.result], managedRls)
  reportPhases(phases)
  console.log(`\ndistribute on Citus (g) under the new app's load:\n${formatDistributeUnderLoad(citus)}`)
  mkdirSync(args.out!, { recursive: true })
  writeFileSync(`${args.out}/results.json`, JSON.stringify({ scale, connections, counts, server: server.source, variants: [a.result, b.result], managed: [c.result, d.result], managedRlsOverhead: managedRls, ...phases, ...extra, citusDistribute: citus }, null, 2))
  writeFileSync(`${args.out}/chart.svg`, await renderChart([a.chart, b.chart]))
  console.log(`\nwrote ${args.out}/results.json and ${args.out}/chart.svg`)
}

async function ensureSnapshot(counts: Counts): Promise<void> {
  const exists = await adminQuery(admin, 'select 1 from pg_database where datname = $1', [snapshot])
  if (exists.rowCount) return console.log(`reusing snapshot ${snapshot}`)
  const started = now()
  const db = createDb<any>(await createScratchDatabase(admin, snapshot), { max: 1 })
  try {
    await sql.raw(LEGACY_SQL).execute(db)
    await fillProductionCopy(db, counts)
    await sql`checkpoint`.execute(db)
  } catch (error) {
    await db.destroy()
    await dropScratchDatabase(admin, snapshot)
    throw error
  }
  await db.destroy()
  console.log(`built snapshot ${snapshot} in ${Math.round(now() - started)} ms`)
}

async function sizes(db: ReturnType<typeof createDb<any>>): Promise<Record<string, number>> {
  const { rows } = await sql<{ t: string; b: string }>`select t, pg_total_relation_size(t::regclass)::text as b from unnest(${TABLES}::text[]) t`.execute(db)
  return Object.fromEntries(rows.map((r) => [r.t, Number(r.b)]))
}

/**
 * A failed try (the plan's way often deadlocks with the app) is recorded and retried on a fresh
 * copy, up to 4 tries, so both sides have a completed run to compare.
 */
async function untilSuccess(variant: string, migrate: (url: string, attempt: number) => Promise<MigrationRun>, counts: Counts, prepare?: (url: string) => Promise<string>) {
  const failed: string[] = []
  for (let attempt = 1; ; attempt++) {
    const run = await measureVariant(variant, migrate, counts, attempt, prepare)
    if (run.result.firstTry || attempt === 4) {
      run.result.firstTry = attempt === 1 && run.result.firstTry
      run.result.tries = attempt
      run.result.failedTries = failed
      return run
    }
    failed.push(run.result.error ?? 'failed')
  }
}

/** A URL of the same database for another role (the bench roles' password is `bench`). */
function as(url: string, role: string): string {
  const u = new URL(url)
  u.username = role
  u.password = 'bench'
  return u.toString()
}

/**
 * The copy as a managed host has it: the tables (and the database) belong to the NOSUPERUSER owner,
 * and the plain role holds DML grants. Ownership moves in the catalog only: no row is rewritten.
 * Returns the URL the old app connects with.
 */
function managedCopy(oldAppRole: string) {
  return async (url: string): Promise<string> => {
    const db = createDb<any>(url, { max: 1 })
    try {
      await sql.raw(`alter database ${new URL(url).pathname.slice(1)} owner to ${ownerRole};
        alter schema drizzle owner to ${ownerRole}; alter table drizzle.__drizzle_migrations owner to ${ownerRole};
        ${TABLES.map((t) => `alter table ${t} owner to ${ownerRole};`).join(' ')}
        grant select, insert, update, delete on ${TABLES.join(', ')} to ${plainRole}`).execute(db)
    } finally {
      await db.destroy()
    }
    return as(url, oldAppRole)
  }
}

async function measureVariant(variant: string, migrate: (url: string, attempt: number) => Promise<MigrationRun>, counts: Counts, attempt: number, prepare?: (url: string) => Promise<string>) {
  const name = `${tag}_${variant[0]}${attempt}`
  created.push(name)
  const url = await createScratchDatabase(admin, name, snapshot)
  const oldAppUrl = prepare ? await prepare(url) : url
  const db = createDb<any>(url, { max: 1 })
  try {
    const sizeBefore = await sizes(db)
    process.stdout.write(`${variant} (try ${attempt}): load starts … `)
    const load = startOldAppWorker(oldAppUrl, { connections, skills: counts.skills, users: counts.users, maxMs: 30 * 60_000 })
    const origin = now()
    await new Promise((r) => setTimeout(r, leadMs))
    const lsnBefore = (await sql<{ l: string }>`select pg_current_wal_lsn()::text as l`.execute(db)).rows[0]!.l
    const migStart = now()
    const run = await migrate(url, attempt)
    const migEnd = now()
    const walBytes = Number((await sql<{ b: string }>`select pg_wal_lsn_diff(pg_current_wal_lsn(), ${lsnBefore}::pg_lsn)::text as b`.execute(db)).rows[0]!.b)
    await new Promise((r) => setTimeout(r, leadMs))
    const app = await load.stop()
    const loadEnd = now()
    process.stdout.write(`migration ${run.ok ? 'done' : 'FAILED'} in ${Math.round(migEnd - migStart)} ms\n`)
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from usage_events where id = any(${app.acknowledged})`.execute(db)
    const slugBefore = latencyStats(app.samples, origin, migStart, 'select_slug').p50
    const slugAfter = latencyStats(app.samples, migEnd, loadEnd, 'select_slug').p50
    const result: VariantResult = {
      variant,
      firstTry: run.ok,
      tries: attempt,
      failedTries: [],
      ...(run.error ? { error: run.error } : {}),
      wallMs: migEnd - migStart,
      steps: run.steps.map((s) => ({ name: s.name, ms: s.ms })),
      walBytes,
      sizeBefore,
      sizeAfter: await sizes(db),
      latency: {
        before: latencyStats(app.samples, origin, migStart),
        during: latencyStats(app.samples, migStart, migEnd),
        after: latencyStats(app.samples, migEnd, loadEnd),
      },
      longestStallMs: longestStall(app.samples, migStart, migEnd),
      appErrors: errorsByMessage(app.samples),
      emptyLookups: app.samples.filter((x) => x.empty).length,
      acknowledged: app.acknowledged.length,
      missingRows: app.acknowledged.length - rows[0]!.n,
      slugP50: { before: slugBefore, after: slugAfter, ratio: slugAfter / slugBefore },
    }
    const chart: ChartSeries = {
      variant,
      bins: bins(app.samples, origin),
      marks: [
        ...run.steps.map((s) => ({ t: (s.start - origin) / 1000, label: s.name })),
        { t: (migEnd - origin) / 1000, label: run.ok ? 'done' : 'failed' },
      ],
    }
    return { url, result, chart }
  } finally {
    await db.destroy()
    // Keep only what the report still reads: skills-db's migrated copy (for the RLS measurements).
    if (!variant.startsWith('a') && !variant.startsWith('c')) {
      await dropScratchDatabase(admin, name)
      created.splice(created.indexOf(name), 1)
    }
  }
}

/**
 * (e) The open phase, then the contract phase, each on a copy migrated by skills-db (no load
 * then), with the new app running as the application role in the default tenant; the RLS
 * overhead after each (after open the tables keep no planner statistics, and tenant-leading
 * indexes serve the queries), and what the tamper-evident audit trail costs an append.
 */
async function measureOpenAndContract(counts: Counts) {
  const name = `${tag}_e1`
  created.push(name)
  const url = await createScratchDatabase(admin, name, snapshot)
  const setup = await runSkillsDb(url, appRole)
  if (!setup.ok) throw new Error(`(e) migrating the copy failed: ${setup.error}`)
  await adminQuery(admin, `alter role ${appRole} password 'bench'`)
  const tenant = await defaultTenant(url)
  const db = createDb<any>(url, { max: 1, applicationName: 'skills-db migrator' })
  try {
    // The bench's own superuser sessions are not an old app.
    const open = await phaseUnderLoad('e: open, new app', url, tenant, counts, () => migrateOpen(db, { appRole, allowOldAppSessions: true }))
    const openRls = await measureRlsOverhead(url, as(url, appRole), tenant, counts.skills)
    const contract = await phaseUnderLoad('f: contract, new app', url, tenant, counts, () => migrateContract(db, { appRole, allowOldAppSessions: true }))
    const rls = await measureRlsOverhead(url, as(url, appRole), tenant, counts.skills)
    const audit = await measureAuditCost(url, as(url, appRole), tenant, { connections })
    // A second tenant, for what one tenant's table lock costs another's request.
    await sql`select set_config('skills_db.unconfined_sessions_ok', 'on', false)`.execute(db)
    await sql`insert into tenants (id, name, slug) values ('bench-tenant-b', 'B', 'bench-b') on conflict do nothing`.execute(db)
    const lockStall = await measureLockStall(as(url, appRole), tenant, 'bench-tenant-b')
    const tenantLifecycle = await measureTenantLifecycle(url, as(url, appRole), tenant, counts, { connections, leadMs })
    return { open: { ...open, rlsOverhead: openRls }, contract: { ...contract, rlsOverhead: rls }, audit, lockStall, tenantLifecycle }
  } finally {
    await db.destroy()
  }
}

async function phaseUnderLoad(variant: string, url: string, tenant: string, counts: Counts, migrate: () => Promise<MigrationOutcome>) {
  const db = createDb<any>(url, { max: 1 })
  try {
    process.stdout.write(`${variant} (try 1): load starts … `)
    const { result: outcome, ...measured } = await underNewAppLoad(db, as(url, appRole), tenant, counts, { connections, leadMs }, migrate)
    process.stdout.write(`${outcome.status === 'error' ? `FAILED: ${outcome.error.message}` : 'done'} in ${Math.round(measured.wallMs)} ms\n`)
    return {
      variant,
      ok: outcome.status !== 'error',
      ...(outcome.status === 'error' ? { error: outcome.error.message } : {}),
      ...measured,
    }
  } finally {
    await db.destroy()
  }
}

function reportPhases(phases: Awaited<ReturnType<typeof measureOpenAndContract>>): void {
  const f = (n: number, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : '–')
  const row = (label: string, ...cells: string[]) => console.log(`${label.padEnd(34)}${cells.map((c, i) => c.padStart(i === cells.length - 1 ? 12 : 30)).join('')}`)
  const runs = [phases.open, phases.contract]
  const errors = (e: (typeof runs)[number]) => Object.values(e.appErrors).reduce((x, y) => x + y, 0)
  console.log('\nOpen and contract phases (skills-db open, then skills-db contract, the old app retired) under the new app\'s load (withTenant, the app role):')
  row('', ...runs.map((e) => e.variant), 'goal')
  row('succeeded', ...runs.map((e) => String(e.ok)), 'true')
  row('wall time', ...runs.map((e) => `${f(e.wallMs, 0)} ms`), '')
  for (const w of ['before', 'during', 'after'] as const) row(`request p50 / p99 / max ${w} (ms)`, ...runs.map((e) => `${f(e.latency[w].p50)}/${f(e.latency[w].p99)}/${f(e.latency[w].max, 0)}`), '')
  row('longest app stall during the phase', ...runs.map((e) => `${f(e.longestStallMs, 0)} ms`), '≤ 100 ms')
  row('app errors', ...runs.map((e) => String(errors(e))), '0')
  row('acknowledged rows missing after', ...runs.map((e) => `${e.missingRows} of ${e.acknowledged}`), '0')
  for (const e of runs) {
    if (e.error) console.log(`  ${e.variant} error: ${e.error}`)
    for (const [message, n] of Object.entries(e.appErrors)) console.log(`  ${e.variant} app error ×${n}: ${message}`)
  }
  console.log('RLS overhead on the opened database (no planner statistics; goal ≤ 1.10×):')
  for (const q of phases.open.rlsOverhead) console.log(formatRlsOverhead(q))
  console.log('RLS overhead on the contracted database (goal ≤ 1.10×):')
  for (const q of phases.contract.rlsOverhead) console.log(formatRlsOverhead(q))
  console.log(`The tamper-evident audit trail (hash chain + signature) against a plain insert, ${connections} clients for the throughput:`)
  console.log(formatAuditCost(phases.audit))
  console.log('A table lock taken by SQL of the app role in one tenant\'s request, and another tenant\'s read of that table:')
  console.log(formatLockStall(phases.lockStall))
  console.log('\nThe tenant lifecycle (skills-db tenant, on the opened and contracted copy):')
  console.log(formatTenantLifecycle(phases.tenantLifecycle))
}

async function defaultTenant(url: string): Promise<string> {
  const db = createDb<any>(url, { max: 1 })
  try {
    return (await sql<{ id: string }>`select id from tenants where slug = 'default'`.execute(db)).rows[0]!.id
  } finally {
    await db.destroy()
  }
}

async function measureMigratedReads(url: string, counts: Counts) {
  await adminQuery(admin, `alter role ${appRole} password 'bench'`)
  const rls = await measureRlsOverhead(url, as(url, appRole), await defaultTenant(url), counts.skills)
  // A smoke run (CI's tiny scale) only shows that the table prints: short rounds, one of each.
  const smoke = scale < 0.01 ? { roundMs: 200, rounds: 1 } : {}
  const requestCost = await measureRequestCost(url, as(url, appRole), await defaultTenant(url), counts.skills, smoke)
  const noop = await measureNoopBoot(url)
  return { rlsOverhead: rls, requestCost, noopMigrateToLatest: noop }
}

/** `--only tenant-lifecycle`: a copy of the snapshot, migrated and opened, then the tenant export and delete. */
async function tenantLifecycleAlone(counts: Counts): Promise<void> {
  await ensureSnapshot(counts)
  const name = `${tag}_tl`
  created.push(name)
  const url = await createScratchDatabase(admin, name, snapshot)
  const run = await runSkillsDb(url, appRole, { open: true })
  if (!run.ok) throw new Error(`migrating the copy failed: ${run.error}`)
  await adminQuery(admin, `alter role ${appRole} password 'bench'`)
  const version = (await adminQuery(admin, 'show server_version')).rows[0]!.server_version as string
  const lifecycle = await measureTenantLifecycle(url, as(url, appRole), await defaultTenant(url), counts, { connections, leadMs })
  console.log(`\nthe tenant lifecycle, PostgreSQL ${version}, scale ${scale} (${counts.usage_events} usage_events):\n${formatTenantLifecycle(lifecycle)}`)
  mkdirSync(args.out!, { recursive: true })
  writeFileSync(`${args.out}/tenant-lifecycle.json`, JSON.stringify({ scale, server: server.source, version, counts, tenantLifecycle: lifecycle }, null, 2))
}

/** `--only request-cost`: a copy of the snapshot, migrated with nothing else running, then the per-request cost. */
async function requestCostAlone(counts: Counts): Promise<void> {
  await ensureSnapshot(counts)
  const name = `${tag}_rc`
  created.push(name)
  const url = await createScratchDatabase(admin, name, snapshot)
  const run = await runSkillsDb(url, appRole)
  if (!run.ok) throw new Error(`migrating the copy failed: ${run.error}`)
  await adminQuery(admin, `alter role ${appRole} password 'bench'`)
  const version = (await adminQuery(admin, 'show server_version')).rows[0]!.server_version as string
  const cost = await measureRequestCost(url, as(url, appRole), await defaultTenant(url), counts.skills)
  console.log(`\nper-request cost, PostgreSQL ${version}, scale ${scale} (${counts.skills} skills), pools of 10:\n${formatRequestCost(cost)}`)
  mkdirSync(args.out!, { recursive: true })
  writeFileSync(`${args.out}/request-cost.json`, JSON.stringify({ scale, server: server.source, version, counts, requestCost: cost }, null, 2))
}

function reportManaged(results: VariantResult[], rls: Awaited<ReturnType<typeof measureRlsOverhead>>): void {
  const row = (label: string, ...cells: string[]) => console.log(`${label.padEnd(34)}${cells.map((c, i) => c.padStart(i === cells.length - 1 ? 12 : 30)).join('')}`)
  const errors = (r: VariantResult) => Object.values(r.appErrors).reduce((x, y) => x + y, 0)
  console.log('\nManaged hosting (no superuser: the NOSUPERUSER owner migrates; skills-db on both):')
  row('', ...results.map((r) => r.variant), 'goal')
  row('succeeded on the first try', ...results.map((r) => String(r.firstTry)), 'true')
  row('migration wall time', ...results.map((r) => `${Math.round(r.wallMs)} ms`), '')
  row('longest app stall during migration', ...results.map((r) => `${Math.round(r.longestStallMs)} ms`), '≤ 100 ms')
  row('app errors', ...results.map((r) => String(errors(r))), '0')
  row('a lookup or update that found no row', ...results.map((r) => String(r.emptyLookups)), '0')
  row('acknowledged rows missing after', ...results.map((r) => `${r.missingRows} of ${r.acknowledged}`), '0')
  console.log('RLS overhead for the app role on the owner-migrated database (old-app policies present; goal ≤ 1.10×):')
  for (const q of rls) console.log(formatRlsOverhead(q))
  for (const r of results) {
    if (r.error) console.log(`  ${r.variant} error: ${r.error}`)
    for (const [message, n] of Object.entries(r.appErrors)) console.log(`  ${r.variant} app error ×${n}: ${message}`)
  }
}

function report(results: VariantResult[], extra: Awaited<ReturnType<typeof measureMigratedReads>>): void {
  const [a, b] = results as [VariantResult, VariantResult]
  const f = (n: number, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : '–')
  const mb = (n: number) => `${f(n / 1048576)} MB`
  const total = (r: Record<string, number>) => Object.values(r).reduce((x, y) => x + y, 0)
  const row = (label: string, va: string, vb: string, ratio = "") => console.log(`${label.padEnd(34)}${va.padStart(20)}${vb.padStart(22)}${ratio.padStart(10)}`)
  const ratio = (x: number, y: number) => (y ? `${f(x / y, 3)}×` : '–')
  console.log()
  row('', a.variant, b.variant, 'a / b')
  row('succeeded on the first try', String(a.firstTry), String(b.firstTry))
  row('tries until it succeeded', String(a.tries), String(b.tries))
  row('migration wall time', `${f(a.wallMs, 0)} ms`, `${f(b.wallMs, 0)} ms`, ratio(a.wallMs, b.wallMs))
  row('WAL written', mb(a.walBytes), mb(b.walBytes), ratio(a.walBytes, b.walBytes))
  row('table sizes before → after', `${mb(total(a.sizeBefore))}→${mb(total(a.sizeAfter))}`.replace(' MB→', '→'), `${mb(total(b.sizeBefore))}→${mb(total(b.sizeAfter))}`.replace(' MB→', '→'))
  for (const w of ['before', 'during', 'after'] as const) {
    row(`app p50 / p99 / max ${w} (ms)`, `${f(a.latency[w].p50)}/${f(a.latency[w].p99)}/${f(a.latency[w].max, 0)}`, `${f(b.latency[w].p50)}/${f(b.latency[w].p99)}/${f(b.latency[w].max, 0)}`)
  }
  row('longest app stall during migration', `${f(a.longestStallMs, 0)} ms`, `${f(b.longestStallMs, 0)} ms`, ratio(a.longestStallMs, b.longestStallMs))
  row('app errors', String(Object.values(a.appErrors).reduce((x, y) => x + y, 0)), String(Object.values(b.appErrors).reduce((x, y) => x + y, 0)))
  row('acknowledged rows missing after', `${a.missingRows} of ${a.acknowledged}`, `${b.missingRows} of ${b.acknowledged}`)
  row('select-by-slug p50 after / before', `${f(a.slugP50.ratio, 2)}×`, `${f(b.slugP50.ratio, 2)}×`)
  for (const r of results) {
    console.log(`\n${r.variant} steps: ${r.steps.map((s) => `${s.name} ${f(s.ms, 0)} ms`).join(', ') || '–'}`)
    if (r.error) console.log(`  error: ${r.error}`)
    for (const e of r.failedTries) console.log(`  failed try: ${e}`)
    for (const [message, n] of Object.entries(r.appErrors)) console.log(`  app error ×${n}: ${message}`)
  }
  console.log('\nRLS overhead on the migrated database (withTenant as the app role, the query under row security vs')
  console.log('the same query with the tenant filter written out, on a copy of the table without row security; goal ≤ 1.10×):')
  for (const q of extra.rlsOverhead) console.log(formatRlsOverhead(q))
  console.log('\nPer-request cost (the whole request, as the app role, pools of 10):')
  console.log(formatRequestCost(extra.requestCost))
  console.log(`no-op migrateToLatest() (fresh pool, up-to-date database): median ${f(extra.noopMigrateToLatest.medianMs)} ms (${extra.noopMigrateToLatest.outcomes.join(', ')})`)
}
