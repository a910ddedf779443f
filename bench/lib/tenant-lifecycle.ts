import { spawn } from 'node:child_process'
import { mkdtempSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { sql } from 'kysely'
import { createDb } from '../../src/connection/create-db.ts'
import { now } from '../../fixtures/clock.ts'
import type { Counts } from '../../fixtures/production-copy.ts'
import { BENCH_TENANT_KEY } from './rls-overhead.ts'
import { formatTakenTiming, measureTakenTiming, type TakenTiming } from './tenant-taken-timing.ts'
import { underNewAppLoad, type UnderLoad } from './under-new-app-load.ts'

const ROOT = fileURLToPath(new URL('../../', import.meta.url))

export interface TenantLifecycleBench {
  export: { rows: number; bytes: number; ms: number; peakRssMb: number }
  taken: TakenTiming
  /** A second tenant of as many usage events as the default one, deleted beside the new app's load in the default tenant. */
  delete: { rows: number } & UnderLoad
}

/** `skills-db tenant …` as the operator runs it: its own process, so its peak RSS is its own. */
function tenantCli(url: string, args: string[]): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', pathToFileURL(path.join(ROOT, 'node_modules/tsx/dist/loader.mjs')).href, path.join(ROOT, 'src/cli/bin.ts'), 'tenant', ...args, '--json'],
      { env: { ...process.env, DATABASE_URL: url, SKILLS_DB_TENANT_KEYS: BENCH_TENANT_KEY, SKILLS_DB_TENANT_KEY: '' }, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    let err = ''
    child.stdout.on('data', (d) => (out += d))
    child.stderr.on('data', (d) => (err += d))
    child.on('close', (code) => (code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`skills-db tenant ${args[0]}: ${err.trim().split('\n').at(-1)}`))))
  })
}

/**
 * Issue 19's figures: the default tenant (every row of the copy) exported by the CLI, with its peak
 * RSS; createTenant's "taken" timed per way of being taken; then a tenant of as many usage events
 * deleted by the CLI while the new app serves the default tenant, with the longest stall and the
 * errors of that load. On an opened copy.
 */
export async function measureTenantLifecycle(url: string, appUrl: string, tenant: string, counts: Counts,
  { connections, leadMs }: { connections: number; leadMs: number }): Promise<TenantLifecycleBench> {
  const dir = mkdtempSync(path.join(tmpdir(), 'skills-db-bench-export-'))
  const db = createDb<any>(url, { max: 1 })
  try {
    const file = path.join(dir, 'default.ndjson')
    const started = now()
    const exported = await tenantCli(url, ['export', tenant, '--out', file]) as { rows: number; peakRssMb: number }
    const exportRun = { rows: exported.rows, bytes: statSync(file).size, ms: now() - started, peakRssMb: exported.peakRssMb }
    const taken = await measureTakenTiming(appUrl)
    const made = await tenantCli(url, ['create', '--name', 'Leaving', '--slug', 'bench-leaving', '--force']) as { tenantId: string }
    const { rows } = await sql<{ n: number }>`with added as (insert into usage_events (tenant_id, tool_name, metadata, created_at)
        select ${made.tenantId}, tool_name, metadata, created_at from usage_events where tenant_id = ${tenant} returning 1)
      select count(*)::int as n from added`.execute(db)
    await tenantCli(url, ['suspend', made.tenantId])
    const { result, ...load } = await underNewAppLoad(db, appUrl, tenant, counts, { connections, leadMs }, () => tenantCli(url, ['delete', made.tenantId, '--yes']))
    void result
    return { export: exportRun, taken, delete: { rows: rows[0]!.n, ...load } }
  } finally {
    await db.destroy()
    rmSync(dir, { recursive: true, force: true })
  }
}

export function formatTenantLifecycle(r: TenantLifecycleBench): string {
  const e = r.export
  const d = r.delete
  const errors = Object.values(d.appErrors).reduce((x, y) => x + y, 0)
  return [
    `  tenant export (the default tenant): ${e.rows} rows, ${(e.bytes / 1048576).toFixed(1)} MB in ${(e.ms / 1000).toFixed(1)} s (${Math.round(e.rows / (e.ms / 1000))} rows/s); peak RSS of the CLI ${e.peakRssMb} MB`,
    formatTakenTiming(r.taken),
    `  tenant delete of ${d.rows} usage events beside the new app's load: ${Math.round(d.wallMs)} ms; longest app stall ${Math.round(d.longestStallMs)} ms (goal ≤ 100 ms; ${Math.round(d.longestStallBeforeMs)} ms in the load before it), at ${d.longestStallAt}; app errors ${errors} (goal 0)`,
    ...Object.entries(d.appErrors).map(([m, n]) => `    app error ×${n}: ${m}`),
  ].join('\n')
}
