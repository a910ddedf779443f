import { sql, type Kysely, type Transaction } from 'kysely'
import { setTimeout as sleep } from 'node:timers/promises'
import { RemoteLockWait, remoteLockWait } from './remote-lock-wait.ts'
import { run } from './run-context.ts'
import { HOLDER_GONE, lockHolders } from './lock-holders.ts'

/**
 * A step of a migration or a Citus command gave up: the lock it needs, or the end of the app's
 * transactions it waits for, did not come within its retry budget. The message names the table and
 * the sessions in the way, and says what to do; a rerun goes on from where it stopped. A failed
 * run's {@link MigrationError} (kind `lock-timeout`) carries it as its cause.
 */
export class LockRetryExhausted extends Error {
  /** Always `'LockRetryExhausted'`, so a log line or a check of `error.name` tells it apart. */
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
  options?: { appSafe?: boolean },
): Promise<T>
/**
 * outsideTransaction: `fn` runs on `db` itself, under the session's own lock timeout, for a
 * statement that refuses a transaction block (Citus's create_distributed_table_concurrently).
 */
export async function withLockRetry<T>(db: Kysely<any>, table: string, fn: (db: Kysely<any>) => Promise<T>, options: { outsideTransaction: true }): Promise<T>
export async function withLockRetry<T>(
  db: Kysely<any>,
  table: string,
  fn: (trx: any) => Promise<T>,
  { appSafe = false, outsideTransaction = false }: { appSafe?: boolean; outsideTransaction?: boolean } = {},
): Promise<T> {
  const settings = run()
  // appSafe: the lock taken (SHARE UPDATE EXCLUSIVE, e.g. VALIDATE) never blocks the app's reads
  // and writes, so it waits in one go, behind autovacuum say, for up to the whole retry budget:
  // not forever, or a session that never ends its transaction would hold the run for good.
  const deadline = Date.now() + settings.lockRetryBudgetMs
  const lockTimeout = appSafe ? settings.lockRetryBudgetMs : settings.lockTimeoutMs
  for (let attempt = 0; ; attempt++) {
    try {
      if (outsideTransaction) return await fn(db)
      // The migrator's session already runs with the lock timeout (it says so in the run), which
      // saves a round trip per DDL transaction; anything else sets it for this transaction.
      return await db.transaction().execute(async (trx) => {
        if (lockTimeout !== settings.sessionLockTimeoutMs) await sql`select pg_catalog.set_config('lock_timeout', ${`${lockTimeout}ms`}::text, true)`.execute(trx)
        return fn(trx)
      })
    } catch (caught) {
      // lock_not_available (our timeout, or a wait on a Citus worker that outlasted it), or
      // deadlock_detected should the server pick us as the victim.
      const remote = remoteLockWait(caught)
      const error = remote ?? caught
      const code = (error as { code?: string }).code
      if (code !== '55P03' && code !== '40P01') throw error
      if ((appSafe && code === '55P03') || Date.now() > deadline) {
        throw new LockRetryExhausted(error instanceof RemoteLockWait
          ? `gave up waiting for a lock on a worker, for table ${table}: held there by the statement of ${error.holders}; end that session or rerun the migration later (it resumes where it stopped)`
          : `gave up waiting for a lock on table ${table}${await lockedWith(db, table)}: held by ${await holdersOf(db, table)}; end that session or rerun the migration later (it resumes where it stopped)`)
      }
      const backoff = Math.min(2000, lockTimeout * 2 ** Math.min(attempt, 6))
      await sleep(backoff / 2 + Math.random() * backoff)
    }
  }
}

/**
 * The tables a step on `table` may lock with it: those a foreign key joins to it (adding or
 * dropping one locks both sides), and the tenant context keys that lockInOrder takes first.
 */
const RELATED = (table: string) => sql`
  select pg_catalog.to_regclass(${table}::text) as rel
  union select c.confrelid from pg_catalog.pg_constraint c where c.contype = 'f' and c.conrelid = pg_catalog.to_regclass(${table}::text)
  union select c.conrelid from pg_catalog.pg_constraint c where c.contype = 'f' and c.confrelid = pg_catalog.to_regclass(${table}::text)
  union select pg_catalog.to_regclass('skills_db.tenant_context_keys')`

/** ` (or a table it locks with it: users, …)`, or nothing when no other table is joined to it. */
async function lockedWith(db: Kysely<any>, table: string): Promise<string> {
  const { rows } = await sql<{ names: string | null }>`
    select string_agg(r.rel::regclass::text, ', ' order by r.rel::regclass::text) as names
    from (${RELATED(table)}) r where r.rel is not null and r.rel <> pg_catalog.to_regclass(${table}::text)`.execute(db)
  return rows[0]?.names ? ` (or a table it locks with it: ${rows[0].names})` : ''
}

/**
 * The other sessions holding a lock on `table` or a table locked with it (the server does not say
 * which lock a statement timed out on), each with the table it holds: the session to end.
 */
const holdersOf = async (db: Kysely<any>, table: string) => await lockHolders(db, sql`select rel from (${RELATED(table)}) r where r.rel is not null`) ?? HOLDER_GONE

/**
 * Takes ACCESS EXCLUSIVE on `tables` in the order given, all within one lock timeout in total
 * (each wait gets what is left of it), then puts the transaction's lock timeout back. For a
 * statement that would lock other tables itself, in its own order: altering the type of a column
 * that foreign keys use re-creates them, locking the table first and then each table on the other
 * side. With the referenced table held, the app's transaction that has written a referencing row
 * waits on it for its foreign-key check, and this one waits on that transaction: it could never
 * finish under a steady load. Taken in the app's own order, each wait ends when the transactions
 * in flight do, and the app queues behind these locks for at most the one timeout:
 * - first the table every withTenant transaction reads before any other (`enter()` reads the
 *   tenant context keys, then `tenants`): the new app's transactions in flight finish, and the
 *   next ones wait there, holding nothing (without it, each holds `tenants` from its first
 *   statement on, and the last lock below could never be had);
 * - then referencing tables before the tables they reference (see `referencingFirst`): the order
 *   of a write, the row first, then its foreign-key check.
 */
export async function lockInOrder(trx: Transaction<any>, tables: readonly string[]): Promise<void> {
  const settings = run()
  const started = Date.now()
  const { rows } = await sql<{ gate: string | null }>`select pg_catalog.to_regclass('skills_db.tenant_context_keys')::text as gate`.execute(trx)
  for (const table of [...(rows[0]!.gate ? [rows[0]!.gate] : []), ...tables]) {
    const left = Math.max(1, settings.lockTimeoutMs - (Date.now() - started))
    await sql`select pg_catalog.set_config('lock_timeout', ${`${left}ms`}::text, true)`.execute(trx)
    await sql`lock table ${sql.table(table)} in access exclusive mode`.execute(trx)
  }
  await sql`select pg_catalog.set_config('lock_timeout', ${`${settings.lockTimeoutMs}ms`}::text, true)`.execute(trx)
}

/**
 * `table` and the tables joined to it by a foreign key on one of `columns` (either side), ordered
 * referencing before referenced (ties by name): the order an app's writes take them in, a row
 * first, then its foreign-key check on the referenced one.
 */
export async function referencingFirst(db: Kysely<any>, table: string, columns: readonly string[]): Promise<string[]> {
  const { rows } = await sql<{ child: string; parent: string }>`
    select c.conrelid::regclass::text as child, c.confrelid::regclass::text as parent
    from pg_catalog.pg_constraint c
    where c.contype = 'f' and c.conrelid <> c.confrelid
      and ((c.conrelid = pg_catalog.to_regclass(${table}::text) and exists (
             select 1 from pg_catalog.pg_attribute a where a.attrelid = c.conrelid and a.attnum = any(c.conkey) and a.attname = any(${[...columns]}::text[])))
        or (c.confrelid = pg_catalog.to_regclass(${table}::text) and exists (
             select 1 from pg_catalog.pg_attribute a where a.attrelid = c.confrelid and a.attnum = any(c.confkey) and a.attname = any(${[...columns]}::text[]))))`.execute(db)
  const self = (await sql<{ t: string }>`select pg_catalog.to_regclass(${table}::text)::text as t`.execute(db)).rows[0]!.t
  const tables = [...new Set([self, ...rows.flatMap((r) => [r.child, r.parent])])].sort()
  // Kahn's order: a table once every table referencing it (within the set) is placed.
  const referencedBy = new Map(tables.map((t) => [t, new Set(rows.filter((r) => r.parent === t).map((r) => r.child))]))
  const order: string[] = []
  while (order.length < tables.length) {
    const next = tables.find((t) => !order.includes(t) && [...referencedBy.get(t)!].every((c) => order.includes(c)))
      ?? tables.find((t) => !order.includes(t))!
    order.push(next)
  }
  return order
}
