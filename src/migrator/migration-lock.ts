import { sql, type Kysely } from 'kysely'
import { setTimeout as sleep } from 'node:timers/promises'
import type { MigrationLogger } from './migration-logger.ts'

// Distinct from Kysely's own key: ours is taken first, so Kysely's is then always free.
const LOCK_KEY = 7_400_113_650_211_842n

/**
 * Runs `fn` while holding the cluster-wide migration lock on this session.
 *
 * Waiting is done by polling `pg_try_advisory_lock` from the client, not by a blocking
 * `pg_advisory_lock`: a blocked statement holds a snapshot, and CREATE INDEX CONCURRENTLY in the
 * running migrator waits for every older snapshot — a blocked waiter would deadlock it.
 */
export async function withMigrationLock<T>(
  conn: Kysely<any>,
  logger: MigrationLogger,
  fn: () => Promise<T>,
  { timeoutMs = 30 * 60_000 }: { timeoutMs?: number } = {},
): Promise<T> {
  const deadline = Date.now() + timeoutMs
  let announced = false
  for (let delay = 50; ; delay = Math.min(delay * 2, 1000)) {
    const { rows } = await sql<{ ok: boolean }>`select pg_catalog.pg_try_advisory_lock(${LOCK_KEY}::bigint) as ok`.execute(conn)
    if (rows[0]?.ok) break
    if (!announced) {
      logger.info(`another migrator ${await holderOf(conn)} is running; waiting for it to finish`)
      announced = true
    }
    if (Date.now() > deadline) {
      throw new Error(`gave up after ${Math.round(timeoutMs / 1000)} s waiting for the migration lock held by ${await holderOf(conn)}`)
    }
    await sleep(delay * (0.5 + Math.random()))
  }
  try {
    return await fn()
  } finally {
    await sql`select pg_catalog.pg_advisory_unlock(${LOCK_KEY}::bigint)`.execute(conn).catch(() => {})
  }
}

async function holderOf(conn: Kysely<any>): Promise<string> {
  const { rows } = await sql<{ who: string }>`
    select 'pid ' || a.pid || coalesce(' (' || nullif(a.application_name, '') || ')', '') as who
    from pg_locks l join pg_stat_activity a on a.pid = l.pid
    where l.locktype = 'advisory' and l.granted
      and l.classid = ${String(LOCK_KEY >> 32n)}::oid and l.objid = ${String(LOCK_KEY & 0xffffffffn)}::oid
    limit 1`.execute(conn)
  return rows[0]?.who ?? '(session unknown)'
}
