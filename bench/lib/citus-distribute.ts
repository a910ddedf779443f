import { sql } from 'kysely'
import { citusInstallation, startCitusCluster } from '../../fixtures/citus-cluster.ts'
import { LEGACY_SQL } from '../../fixtures/legacy.ts'
import { fillProductionCopy, type Counts } from '../../fixtures/production-copy.ts'
import { distribute } from '../../src/citus/distribute.ts'
import { createDb } from '../../src/connection/create-db.ts'
import { migrateContract, migrateOpen, migrateToLatest } from '../../src/migrator/migrate.ts'
import { underNewAppLoad, type UnderLoad } from './under-new-app-load.ts'
import { BENCH_TENANT_KEY } from './rls-overhead.ts'

export interface DistributeUnderLoad extends UnderLoad {
  topology: string
}

/**
 * `skills-db distribute` on a Citus cluster of its own (a coordinator in the metadata and two
 * workers, fixtures/citus-cluster.ts), on the production copy at the bench's scale migrated to the
 * contracted schema, while the new app's requests run: the longest stall, errors, rows lost. Not
 * run without Citus installed into the machine's PostgreSQL (DEVELOPERS.md says how to build it),
 * or with SKILLS_DB_CITUS_TESTS=off (CI's smoke run: the Citus suite runs distribute under load).
 */
export async function measureDistributeUnderLoad(counts: Counts, { connections, leadMs, appRole }: { connections: number; leadMs: number; appRole: string }): Promise<DistributeUnderLoad | { notRun: string }> {
  if (process.env.SKILLS_DB_CITUS_TESTS === 'off') return { notRun: 'SKILLS_DB_CITUS_TESTS=off' }
  const installed = citusInstallation()
  if ('notInstalled' in installed) return { notRun: installed.notInstalled }
  const cluster = await startCitusCluster('coordinator-in-metadata')
  // Two connections: distribute watches its own waits on the workers from a second one.
  const admin = createDb<any>(cluster.url, { max: 2, applicationName: 'skills-db migrator' })
  try {
    await sql.raw(LEGACY_SQL).execute(admin)
    await fillProductionCopy(admin, counts)
    for (const migrate of [migrateToLatest, migrateOpen, migrateContract]) {
      const outcome = await migrate(admin, { appRole, tenantKeys: [BENCH_TENANT_KEY], allowOldAppSessions: true })
      if (outcome.status === 'error') throw new Error(`(g) migrating the Citus copy failed: ${outcome.error.message}`)
    }
    await sql.raw(`alter role "${appRole}" password 'bench'`).execute(admin)
    const tenant = (await sql<{ id: string }>`select id from tenants where slug = 'default'`.execute(admin)).rows[0]!.id
    const u = new URL(cluster.url)
    u.username = appRole
    u.password = 'bench'
    process.stdout.write('g: distribute on Citus, new app: load starts … ')
    const { result: _, ...measured } = await underNewAppLoad(admin, u.toString(), tenant, counts, { connections, leadMs },
      () => distribute(admin, { logger: { info: () => {} } }))
    process.stdout.write(`done in ${Math.round(measured.wallMs)} ms\n`)
    return { topology: cluster.topology, ...measured }
  } finally {
    await admin.destroy()
    await cluster.stop()
  }
}

export function formatDistributeUnderLoad(r: DistributeUnderLoad | { notRun: string }): string {
  if ('notRun' in r) return `  not run: ${r.notRun}`
  const f = (n: number, d = 1) => (Number.isFinite(n) ? n.toFixed(d) : '–')
  const errors = Object.values(r.appErrors).reduce((x, y) => x + y, 0)
  return [
    `  topology: ${r.topology}, 2 workers; distribute took ${f(r.wallMs, 0)} ms`,
    ...(['before', 'during', 'after'] as const).map((w) => `  request p50 / p99 / max ${w}: ${f(r.latency[w].p50)} / ${f(r.latency[w].p99)} / ${f(r.latency[w].max, 0)} ms`),
    `  longest app stall during distribute: ${f(r.longestStallMs, 0)} ms (goal ≤ 1000 ms)`,
    `  app errors: ${errors} (goal 0)${Object.entries(r.appErrors).map(([m, n]) => `\n    ×${n}: ${m}`).join('')}`,
    `  acknowledged rows missing after: ${r.missingRows} of ${r.acknowledged} (goal 0)`,
    `  acknowledged updates that matched no row: ${r.emptyUpdates} of ${r.bumps} (goal 0)`,
  ].join('\n')
}
