import { sql, type Kysely } from 'kysely'
import { setTimeout as sleep } from 'node:timers/promises'
import { progress } from '../online/run-context.ts'

export class MigrationLockTimeout extends Error {
  override name = 'MigrationLockTimeout'
}

/** How long a migrator waits for another one to finish. */
const LOCK_WAIT_MS = 30 * 60_000

// Distinct from Kysely's own key: ours is taken first, so Kysely's is then always free.
const LOCK_KEY = 7_400_113_650_211_842n

/**
 * Runs `fn` while holding this database's migration lock (advisory locks are per database) on this session.
 *
 * Waiting is done by polling `pg_try_advisory_lock` from the client, not by a blocking
 * `pg_advisory_lock`: a blocked statement holds a snapshot, and CREATE INDEX CONCURRENTLY in the
 * running migrator waits for every older snapshot — a blocked waiter would deadlock it.
 */
export async function withMigrationLock<T>(
  conn: Kysely<any>,
  fn: () => Promise<T>,
): Promise<T> {
  const deadline = Date.now() + LOCK_WAIT_MS
  let announced = false
  for (let delay = 50; ; delay = Math.min(delay * 2, 1000)) {
    const { rows } = await sql<{ ok: boolean }>`select pg_catalog.pg_try_advisory_lock(${LOCK_KEY}::bigint) as ok`.execute(conn)
    if (rows[0]?.ok) break
    if (!announced) {
      progress(`another migrator ${await holderOf(conn)} is running; waiting for it to finish`)
      announced = true
    }
    if (Date.now() > deadline) {
      throw new MigrationLockTimeout(`gave up after ${Math.round(LOCK_WAIT_MS / 60_000)} min waiting for the migration lock held by ${await holderOf(conn)}`)
    }
    await sleep(delay * (0.5 + Math.random()))
  }
  try {
    return await fn()
  } finally {
    // A transaction a failed step left open would make the unlock fail: end it first.
    await sql`rollback`.execute(conn).catch(() => {})
    await sql`select pg_catalog.pg_advisory_unlock(${LOCK_KEY}::bigint)`.execute(conn).catch(() => {})
  }
}

async function holderOf(conn: Kysely<any>): Promise<string> {
  const { rows } = await sql<{ who: string }>`
    -- Runs before the preflight has looked for planted operators: format(), not ||.
    select pg_catalog.format('pid %s%s', a.pid, case when a.application_name <> '' then pg_catalog.format(' (%s)', a.application_name) else '' end) as who
    from pg_locks l join pg_stat_activity a on a.pid = l.pid
    where l.locktype = 'advisory' and l.granted and l.database = (select oid from pg_catalog.pg_database where datname = pg_catalog.current_database())
      and l.classid = ${String(LOCK_KEY >> 32n)}::oid and l.objid = ${String(LOCK_KEY & 0xffffffffn)}::oid
    limit 1`.execute(conn)
  return rows[0]?.who ?? '(session unknown)'
}
