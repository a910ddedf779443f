import { sql, type Kysely, type Transaction } from 'kysely'
import { setTimeout as sleep } from 'node:timers/promises'
import { run } from './run-context.ts'

export class LockRetryExhausted extends Error {
  override name = 'LockRetryExhausted'
}

/**
 * Runs `fn` in its own short transaction with a small `lock_timeout`, retrying with backoff and
 * jitter when a lock is not granted in time. The app is then never queued behind this DDL for
 * longer than the lock timeout, and a deadlock with the app cannot form (we give up first).
 * When the retry budget runs out, the error names the table and the sessions holding it.
 *
 * @example
 * await withLockRetry(db, 'skills', (trx) => sql`alter table skills add column x int`.execute(trx))
 */
export async function withLockRetry<T>(
  db: Kysely<any>,
  table: string,
  fn: (trx: Transaction<any>) => Promise<T>,
  { appSafe = false }: { appSafe?: boolean } = {},
): Promise<T> {
  const settings = run()
  // appSafe: the lock taken (SHARE UPDATE EXCLUSIVE, e.g. VALIDATE) never blocks the app's reads
  // and writes, so it may wait as long as it must — behind autovacuum, say — without a timeout.
  const lockTimeout = appSafe ? 0 : settings.lockTimeoutMs
  const deadline = Date.now() + settings.lockRetryBudgetMs
  for (let attempt = 0; ; attempt++) {
    try {
      // The migrator's session already runs with the lock timeout (it says so in the run), which
      // saves a round trip per DDL transaction; anything else sets it for this transaction.
      return await db.transaction().execute(async (trx) => {
        if (lockTimeout !== settings.sessionLockTimeoutMs) await sql`select pg_catalog.set_config('lock_timeout', ${`${lockTimeout}ms`}::text, true)`.execute(trx)
        return fn(trx)
      })
    } catch (error) {
      // lock_not_available (our timeout), or deadlock_detected should the server pick us as the victim.
      const code = (error as { code?: string }).code
      if (code !== '55P03' && code !== '40P01') throw error
      if (Date.now() > deadline) {
        throw new LockRetryExhausted(
          `gave up waiting for a lock on table ${table}: held by ${await lockHolders(db, table)}; end that session or rerun the migration later (it resumes where it stopped)`,
        )
      }
      const backoff = Math.min(2000, lockTimeout * 2 ** Math.min(attempt, 6))
      await sleep(backoff / 2 + Math.random() * backoff)
    }
  }
}

async function lockHolders(db: Kysely<any>, table: string): Promise<string> {
  const { rows } = await sql<{ who: string }>`
    select string_agg(distinct 'pid ' || a.pid || ' (' || coalesce(nullif(a.application_name, ''), a.usename::text)
      || ', ' || a.state || ', ' || left(a.query, 60) || ')', '; ') as who
    from pg_locks l join pg_stat_activity a on a.pid = l.pid
    where l.relation = pg_catalog.to_regclass(${table}::text) and l.granted and l.pid <> pg_catalog.pg_backend_pid()`.execute(db)
  return rows[0]?.who ?? 'a session that has since finished'
}
