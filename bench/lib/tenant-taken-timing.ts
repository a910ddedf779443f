import { randomUUID } from 'node:crypto'
import { sql } from 'kysely'
import { createDb } from '../../src/connection/create-db.ts'
import { createTenant, suspendTenant, TenantTakenError } from '../../src/index.ts'
import { now } from '../../fixtures/clock.ts'
import { median } from './metrics.ts'
import { BENCH_TENANT_KEY } from './rls-overhead.ts'

const CASES = ['slug', 'domain', 'id', 'suspended tenant\'s slug'] as const
export type TakenCase = (typeof CASES)[number]

export interface TakenTiming {
  rounds: number
  /** p50 of createTenant's answer "taken", per way of being taken, in ms */
  p50: Record<TakenCase, number>
}

/**
 * Issue 19's "taken" without a timing difference: createTenant, as the app role, of a slug, a domain
 * or an id that an active tenant holds, and of a suspended tenant's slug, interleaved in a shuffled
 * order per round, each answered TenantTakenError. Their medians side by side: a difference would
 * tell an attacker which one is taken, or that a tenant is suspended.
 */
export async function measureTakenTiming(appUrl: string, rounds = 200): Promise<TakenTiming> {
  // One session: the bench's own superuser sessions are connected, and 0005's guard would refuse
  // every sign-up; the setting says none of them is the old app (what `tenant create --force` says).
  const db = createDb<any>(appUrl, { max: 1, tenantKey: BENCH_TENANT_KEY })
  try {
    await sql`select pg_catalog.set_config('skills_db.unconfined_sessions_ok', 'on', false)`.execute(db)
    const tag = randomUUID().slice(0, 8)
    const held = await createTenant(db, { name: 'Taken', slug: `taken-${tag}`, domain: `taken-${tag}.example.com` })
    const gone = await createTenant(db, { name: 'Suspended', slug: `suspended-${tag}` })
    await suspendTenant(db, gone.tenantId)
    let n = 0
    const attempt: Record<TakenCase, () => Parameters<typeof createTenant>[1]> = {
      slug: () => ({ name: 'x', slug: `taken-${tag}`, domain: `free-${tag}-${++n}.example.com` }),
      domain: () => ({ name: 'x', slug: `free-${tag}-${++n}`, domain: `taken-${tag}.example.com` }),
      id: () => ({ name: 'x', slug: `free-${tag}-${++n}`, id: held.tenantId }),
      'suspended tenant\'s slug': () => ({ name: 'x', slug: `suspended-${tag}`, domain: `free-${tag}-${++n}.example.com` }),
    }
    const ms: Record<TakenCase, number[]> = { slug: [], domain: [], id: [], 'suspended tenant\'s slug': [] }
    for (let round = 0; round < rounds + 10; round++) {
      for (const c of [...CASES].sort(() => Math.random() - 0.5)) {
        const started = now()
        const outcome = await createTenant(db, attempt[c]()).then(() => 'created', (e: unknown) => e)
        const took = now() - started
        if (!(outcome instanceof TenantTakenError)) throw new Error(`createTenant of a taken ${c} answered ${outcome instanceof Error ? outcome.message : outcome}, not "taken"`)
        if (round >= 10) ms[c].push(took) // the first rounds warm the plans up
      }
    }
    return { rounds, p50: Object.fromEntries(CASES.map((c) => [c, median(ms[c])])) as Record<TakenCase, number> }
  } finally {
    await db.destroy()
  }
}

export function formatTakenTiming(t: TakenTiming): string {
  const values = Object.values(t.p50)
  const spread = Math.max(...values) / Math.min(...values)
  return `  createTenant answered "taken" (${t.rounds} rounds, shuffled): p50 ${Object.entries(t.p50).map(([c, v]) => `${c} ${v.toFixed(2)} ms`).join(', ')}; slowest ÷ fastest ${spread.toFixed(2)}× (goal: within the noise, ≤ 1.10×)`
}
