import { sql, type Kysely } from 'kysely'
import { now } from '../../fixtures/clock.ts'
import { startNewAppWorker } from '../../fixtures/load-worker.ts'
import type { Counts } from '../../fixtures/production-copy.ts'
import { errorsByMessage, latencyStats, longestStallWindow, type LatencyStats } from './metrics.ts'
import { BENCH_TENANT_KEY } from './rls-overhead.ts'

export interface UnderLoad {
  wallMs: number
  longestStallMs: number
  /** when the longest stall began (ISO time, to set beside the server's log) */
  longestStallAt: string
  /** the longest stall of the same load before the action (from its first answer): what the machine gives without it */
  longestStallBeforeMs: number
  appErrors: Record<string, number>
  acknowledged: number
  missingRows: number
  /** acknowledged updates (bump_uses), and those of them that matched no row (each a lost update) */
  bumps: number
  emptyUpdates: number
  latency: { before: LatencyStats; during: LatencyStats; after: LatencyStats }
}

/**
 * Runs `action` while the new app's requests (fixtures/new-app.ts, as the app role at `appUrl`, in
 * one tenant) run, with `leadMs` of load before and after it: what `action` returned, how long it
 * took, the longest stall, the app's errors, the acknowledged rows missing afterwards (counted
 * through `db`) and the updates that matched no row.
 */
export async function underNewAppLoad<T>(db: Kysely<any>, appUrl: string, tenantId: string, counts: Counts,
  { connections, leadMs }: { connections: number; leadMs: number }, action: () => Promise<T>): Promise<{ result: T } & UnderLoad> {
  const load = startNewAppWorker(appUrl, { connections, skills: counts.skills, users: counts.users, tenantId, tenantKey: BENCH_TENANT_KEY, maxMs: 30 * 60_000 })
  const origin = now()
  await new Promise((r) => setTimeout(r, leadMs))
  const start = now()
  const result = await action()
  const end = now()
  await new Promise((r) => setTimeout(r, leadMs))
  const app = await load.stop()
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from usage_events where id = any(${app.acknowledged})`.execute(db)
  const stall = longestStallWindow(app.samples, start, end)
  return {
    result,
    wallMs: end - start,
    longestStallMs: stall.ms,
    longestStallAt: new Date(stall.start).toISOString(),
    // From the load's first answer: before it, the workers were still connecting.
    longestStallBeforeMs: longestStallWindow(app.samples, app.samples.reduce((first, x) => Math.min(first, x.end), start), start).ms,
    appErrors: errorsByMessage(app.samples),
    acknowledged: app.acknowledged.length,
    missingRows: app.acknowledged.length - rows[0]!.n,
    bumps: app.samples.filter((x) => x.op === 'bump_uses' && x.error === undefined).length,
    emptyUpdates: app.samples.filter((x) => x.op === 'bump_uses' && x.empty).length,
    latency: { before: latencyStats(app.samples, origin, start), during: latencyStats(app.samples, start, end), after: latencyStats(app.samples, end, Infinity) },
  }
}
