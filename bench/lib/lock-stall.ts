import { sql } from 'kysely'
import type { DB } from '../../src/db-types.ts'
import { createDb } from '../../src/connection/create-db.ts'
import { withTenant } from '../../src/tenancy/with-tenant.ts'
import { BENCH_TENANT_KEY } from './rls-overhead.ts'

export interface LockStall {
  /** how long tenant A's transaction holds its table lock */
  heldMs: number
  /** B's read of the locked table, without a lock timeout: it waits for A */
  withoutTimeoutMs: number
  withoutTimeoutError?: string
  /** the same with createDb(url, { lockTimeoutMs }) */
  lockTimeoutMs: number
  withTimeoutMs: number
  withTimeoutError?: string
}

/**
 * What SQL of the app role that locks a table (`LOCK TABLE skills IN ACCESS EXCLUSIVE MODE`
 * inside tenant A's request, as an injection may) costs another tenant's request: B's read of
 * that table waits for as long as A's transaction holds the lock, unless the app set a lock timeout.
 * Needs a second tenant, `tenantB`, and the app role at `appUrl`.
 */
export async function measureLockStall(appUrl: string, tenantA: string, tenantB: string, { heldMs = 1000, lockTimeoutMs = 100 } = {}): Promise<LockStall> {
  const holder = createDb<DB>(appUrl, { max: 1, tenantKey: BENCH_TENANT_KEY })
  const plain = createDb<DB>(appUrl, { max: 1, tenantKey: BENCH_TENANT_KEY })
  const bounded = createDb<DB>(appUrl, { max: 1, tenantKey: BENCH_TENANT_KEY, lockTimeoutMs })
  const readAsB = async (db: typeof plain) => {
    const start = performance.now()
    try {
      await withTenant(db, tenantB, (trx) => sql`select count(*) from skills`.execute(trx))
      return { ms: performance.now() - start }
    } catch (error) {
      return { ms: performance.now() - start, error: (error as Error).message }
    }
  }
  const whileLocked = async (db: typeof plain) => {
    let locked!: () => void
    const taken = new Promise<void>((resolve) => (locked = resolve))
    const held = withTenant(holder, tenantA, async (trx) => {
      await sql`lock table skills in access exclusive mode`.execute(trx)
      locked()
      await sql`select pg_sleep(${heldMs / 1000})`.execute(trx)
    })
    await taken
    const read = await readAsB(db)
    await held
    return read
  }
  try {
    // A first read of each pool, so the measured one is not its first connection.
    await readAsB(plain)
    await readAsB(bounded)
    const without = await whileLocked(plain)
    const withTimeout = await whileLocked(bounded)
    return {
      heldMs,
      withoutTimeoutMs: without.ms,
      ...(without.error ? { withoutTimeoutError: without.error } : {}),
      lockTimeoutMs,
      withTimeoutMs: withTimeout.ms,
      ...(withTimeout.error ? { withTimeoutError: withTimeout.error } : {}),
    }
  } finally {
    await Promise.all([holder.destroy(), plain.destroy(), bounded.destroy()])
  }
}

export function formatLockStall(s: LockStall): string {
  const outcome = (ms: number, error?: string) => `${ms.toFixed(0)} ms${error ? ` (${error.split(':')[0]})` : ''}`
  return `  B's read while A's request holds LOCK TABLE skills for ${s.heldMs} ms: ${outcome(s.withoutTimeoutMs, s.withoutTimeoutError)}; ` +
    `with lockTimeoutMs ${s.lockTimeoutMs}: ${outcome(s.withTimeoutMs, s.withTimeoutError)}`
}
