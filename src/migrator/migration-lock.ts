import { randomBytes } from 'node:crypto'
import { sql, type Kysely } from 'kysely'
import { setTimeout as sleep } from 'node:timers/promises'
import { HOLDER_GONE, lockHolders, STRONG_LOCKS } from '../online/lock-holders.ts'
import { inRun, progress, run } from '../online/run-context.ts'

/**
 * Another migrator (or audit verify, a Citus command, a tenant export, import or delete) held the
 * database's migration lock for longer than a run waits (30 minutes); the message names the session
 * that holds it. A failed
 * run's {@link MigrationError} (kind `lock-timeout`) carries it as its cause.
 */
export class MigrationLockTimeout extends Error {
  /** Always `'MigrationLockTimeout'`, so a log line or a check of `error.name` tells it apart. */
  override name = 'MigrationLockTimeout'
}

/** How long a migrator waits for another one to finish. */
const LOCK_WAIT_MS = 30 * 60_000

/**
 * The advisory key of a database that has no skills_db.migration_lock yet (never migrated), and the
 * first key that table holds. Distinct from Kysely's own key: ours is taken first, so Kysely's is
 * then always free.
 */
const FIRST_KEY = 7_400_113_650_211_842n

/** How long one poll waits for skills_db.migration_lock and its row: a migrator holds either a moment only. */
const POLL_WAIT_MS = 1000

/** How long the lock's holder waits for skills_db.migration_lock's row, which pollers hold a moment at a time. */
const ROW_WAIT_MS = 10_000

/**
 * Runs `fn` while holding this database's migration lock on this session, and, once the database
 * has skills_db.migration_lock, with the migrator's view of every tenant (see
 * {@link registerMaintenanceView}); both end with `fn`.
 *
 * The lock is a session-level advisory lock, because a migration runs many transactions (CREATE
 * INDEX CONCURRENTLY cannot run inside one). Any role may take any advisory key, so the key is not
 * a constant: it lives in skills_db.migration_lock, which the app role cannot read, and is taken
 * under a row lock of that table, which it cannot take either. Should a session that cannot migrate
 * hold the key (the app role's, which saw it in pg_locks during an earlier run), the lock moves to
 * a new key; a migrator waits only for another migrator.
 *
 * Waiting is done by polling, not by a blocking lock: a blocked statement holds a snapshot, and
 * CREATE INDEX CONCURRENTLY in the running migrator waits for every older snapshot — a blocked
 * waiter would deadlock it.
 */
export async function withMigrationLock<T>(conn: Kysely<any>, fn: () => Promise<T>): Promise<T> {
  const deadline = Date.now() + LOCK_WAIT_MS
  let announced = false
  let key: bigint | undefined
  let heldSince: number | undefined
  for (let delay = 50; ; delay = Math.min(delay * 2, 1000)) {
    const got = await tryLock(conn)
    if (typeof got === 'bigint') {
      key = got
      break
    }
    if (got === 'held' && !(await migratorHoldsTable(conn))) {
      // A session kept skills_db.migration_lock or its row from this poll for a whole second (a
      // LOCK TABLE, a SELECT … FOR SHARE or an UPDATE left open, as the owner or a superuser can):
      // no migrator holds it that long, and such a session may never let go. Waited for as for any
      // held table, the run's lock retry budget, saying so (an outside review had every tenant
      // command hang on one with no word).
      const who = await tableHolders(conn)
      const budgetMs = run().lockRetryBudgetMs
      if (heldSince === undefined) progress(`skills_db.migration_lock is held by ${who}; waiting up to ${budgetMs / 1000} s for it to end`)
      heldSince ??= Date.now()
      if (Date.now() - heldSince > budgetMs) {
        throw new MigrationLockTimeout(`gave up after ${budgetMs / 1000} s waiting for skills_db.migration_lock, held by ${who}: end that session (while it holds the table or its row, no migrator or tenant command can start)`)
      }
    } else {
      heldSince = undefined
      if (!announced) {
        progress(`another migrator ${await holderOf(conn)} is running; waiting for it to finish`)
        announced = true
      }
    }
    if (Date.now() > deadline) {
      throw new MigrationLockTimeout(`gave up after ${Math.round(LOCK_WAIT_MS / 60_000)} min waiting for the migration lock held by ${await holderOf(conn)}`)
    }
    await sleep(delay * (0.5 + Math.random()))
  }
  const secret = randomBytes(32).toString('hex')
  let registered = false
  const register = async (db: Kysely<any>) => {
    await registerMaintenanceView(db, secret)
    registered = true
  }
  try {
    await register(conn)
    // Again before each migration: on a database migrated for the first time, the table comes later.
    return await inRun({ beforeEachMigration: register }, fn)
  } finally {
    // A transaction a failed step left open would make the rest fail: end it first.
    await sql`rollback`.execute(conn).catch(() => {})
    if (registered) {
      await conn.transaction().execute(async (trx) => {
        await sql`select pg_catalog.set_config('lock_timeout', ${`${ROW_WAIT_MS}ms`}::text, true)`.execute(trx)
        await sql`update skills_db.migration_lock set view_hash = null
          where view_hash = pg_catalog.sha256(pg_catalog.convert_to(${secret}::text, 'UTF8'))`.execute(trx)
      }).catch(() => {})
    }
    // Plans made with the view of every tenant must not outlive it on this (pooled) connection.
    await sql`select pg_catalog.set_config('skills_db.maintenance_view', '', false)`.execute(conn).catch(() => {})
    await sql`discard plans`.execute(conn).catch(() => {})
    await sql`select pg_catalog.pg_advisory_unlock(${key}::bigint)`.execute(conn).catch(() => {})
  }
}

/**
 * The migrator's view of every tenant, for the owner's policies (0014): a secret only this run
 * knows, its hash registered in skills_db.migration_lock while the lock is held, the secret in this
 * session's skills_db.maintenance_view. Another session of the same role sees nothing by setting
 * anything. Again before each migration (the table may be new), and a no-op where there is none.
 */
export async function registerMaintenanceView(conn: Kysely<any>, secret: string): Promise<void> {
  if (!(await lockTableExists(conn))) return
  // Other migrators waiting for the lock hold this row a moment at a time (tryLock's FOR UPDATE):
  // wait out those moments, longer than the run's lock timeout (50 ms), which a loaded machine's
  // pollers outlast (CI saw one of 8 instances booting at once fail so).
  const register = (db: Kysely<any>) => sql`update skills_db.migration_lock set view_hash = pg_catalog.sha256(pg_catalog.convert_to(${secret}::text, 'UTF8'))`.execute(db)
  // Inside a caller's transaction, as it is (a SET LOCAL would outlive this statement there).
  if (conn.isTransaction) await register(conn)
  else {
    // Pollers hold the row a moment each; held for this long, a session that is no migrator holds
    // the table or the row (a LOCK TABLE … IN SHARE MODE lets pollers by, not this update).
    const waitMs = Math.min(ROW_WAIT_MS, run().lockRetryBudgetMs)
    await conn.transaction().execute(async (trx) => {
      await sql`select pg_catalog.set_config('lock_timeout', ${`${waitMs}ms`}::text, true)`.execute(trx)
      await register(trx)
    }).catch(async (error: { code?: string }) => {
      if (error.code !== '55P03') throw error
      throw new MigrationLockTimeout(`gave up after ${waitMs / 1000} s waiting for skills_db.migration_lock's row, held by ${await tableHolders(conn)}: end that session (while it holds the table or its row, no migrator or tenant command can start)`, { cause: error })
    })
  }
  await sql`select pg_catalog.set_config('skills_db.maintenance_view', ${secret}::text, false)`.execute(conn)
}

async function lockTableExists(conn: Kysely<any>): Promise<boolean> {
  const { rows } = await sql<{ t: string | null }>`select pg_catalog.to_regclass('skills_db.migration_lock')::text as t`.execute(conn)
  return rows[0]?.t != null
}

/**
 * Creates skills_db.migration_lock, once the migrator's schema exists, by the holder of the first
 * key (the one used until then, which it then holds): so only one migrator ever creates it.
 */
async function createLockTable(conn: Kysely<any>): Promise<void> {
  const { rows } = await sql<{ n: string | null }>`select pg_catalog.to_regnamespace('skills_db')::text as n`.execute(conn)
  if (!rows[0]?.n) return
  await conn.transaction().execute(async (trx) => {
    await sql`create table if not exists skills_db.migration_lock (
      only_row boolean primary key default true check (only_row), lock_key bigint not null, view_hash bytea)`.execute(trx)
    await sql`revoke all on skills_db.migration_lock from public`.execute(trx)
    await sql`insert into skills_db.migration_lock (lock_key) values (${FIRST_KEY}::bigint) on conflict do nothing`.execute(trx)
  })
}

/**
 * Takes the lock if it is free (or held by a session that cannot migrate): its key; 'busy' when a
 * migrator holds it; 'held' when skills_db.migration_lock or its row stayed locked for a whole
 * poll ({@link POLL_WAIT_MS}), which no migrator does.
 */
async function tryLock(conn: Kysely<any>): Promise<bigint | 'busy' | 'held'> {
  if (!(await lockTableExists(conn))) {
    if (!(await advisoryLock(conn, FIRST_KEY))) return 'busy'
    await createLockTable(conn)
    return FIRST_KEY
  }
  return conn.transaction().execute(async (trx): Promise<bigint | 'busy' | 'held'> => {
    // Other pollers hold the row a moment each (and the holder, registering its view): waited for,
    // but at most a second. A blocked statement holds a snapshot, which the running migrator's
    // CREATE INDEX CONCURRENTLY waits for: a second at most, never its whole wait (see above).
    await sql`select pg_catalog.set_config('lock_timeout', ${`${POLL_WAIT_MS}ms`}::text, true)`.execute(trx)
    const { rows } = await sql<{ key: string }>`select lock_key::text as key from skills_db.migration_lock for update`.execute(trx)
    const key = BigInt(rows[0]?.key ?? FIRST_KEY)
    if (await advisoryLock(trx, key)) return key
    const { rows: holders } = await sql<{ who: string; migrator: boolean }>`
      select pg_catalog.format('pid %s (%s)', a.pid, r.rolname) as who,
        r.rolsuper or pg_catalog.pg_has_role(r.oid, n.nspowner, 'MEMBER') as migrator
      from pg_catalog.pg_locks l join pg_catalog.pg_stat_activity a on a.pid = l.pid join pg_catalog.pg_roles r on r.oid = a.usesysid,
        pg_catalog.pg_namespace n
      where n.nspname = 'skills_db' and l.locktype = 'advisory' and l.granted
        and l.database = (select oid from pg_catalog.pg_database where datname = pg_catalog.current_database())
        and l.classid = ${high(key)}::oid and l.objid = ${low(key)}::oid`.execute(trx)
    if (holders.length === 0 || holders.some((h) => h.migrator)) return 'busy'
    const next = BigInt.asUintN(62, BigInt(`0x${randomBytes(8).toString('hex')}`))
    await sql`update skills_db.migration_lock set lock_key = ${next}::bigint`.execute(trx)
    if (!(await advisoryLock(trx, next))) return 'busy'
    progress(`the migration lock's key was held by ${holders.map((h) => h.who).join(', ')}, which cannot migrate: the lock moved to a new key`)
    return next
  }).catch((error: { code?: string }) => {
    // Caught once Kysely has rolled the transaction back (caught inside, its COMMIT would find the
    // transaction aborted): the table or its row held past the poll's lock timeout.
    if (error.code === '55P03') return 'held'
    throw error
  })
}

/** pg_locks shows a bigint advisory key as two unsigned halves. */
const high = (key: bigint) => String(BigInt.asUintN(64, key) >> 32n)
const low = (key: bigint) => String(BigInt.asUintN(64, key) & 0xffffffffn)

async function advisoryLock(db: Kysely<any>, key: bigint): Promise<boolean> {
  const { rows } = await sql<{ ok: boolean }>`select pg_catalog.pg_try_advisory_lock(${key}::bigint) as ok`.execute(db)
  return rows[0]?.ok === true
}

/**
 * The sessions holding skills_db.migration_lock with more than a read (a table lock, or the lock
 * of a row they lock or update): the ones that kept a poll from its row.
 */
async function tableHolders(conn: Kysely<any>): Promise<string> {
  return await lockHolders(conn, sql`select pg_catalog.to_regclass('skills_db.migration_lock')`, ROW_LOCKING) ?? HOLDER_GONE
}

const ROW_LOCKING = ['RowShareLock', 'RowExclusiveLock', ...STRONG_LOCKS]

/**
 * The lock's key, read without waiting more than a poll (a row lock does not hold a read up; a
 * LOCK TABLE does): undefined when the table was held that long.
 */
async function currentKey(conn: Kysely<any>): Promise<bigint | undefined> {
  if (!(await lockTableExists(conn))) return FIRST_KEY
  return conn.transaction().execute(async (trx) => {
    await sql`select pg_catalog.set_config('lock_timeout', ${`${POLL_WAIT_MS}ms`}::text, true)`.execute(trx)
    return BigInt((await sql<{ key: string }>`select lock_key::text as key from skills_db.migration_lock`.execute(trx)).rows[0]?.key ?? FIRST_KEY)
  }).catch(() => undefined)
}

/**
 * The session holding the lock's key holds skills_db.migration_lock's row too: a migrator that
 * registered its view inside a transaction of its own (a migration run in one, as kysely-ctl's
 * Migrator does): waited for as a migrator, not as a session in the way.
 */
async function migratorHoldsTable(conn: Kysely<any>): Promise<boolean> {
  const key = await currentKey(conn)
  if (key === undefined) return false
  const { rows } = await sql<{ held: boolean }>`
    select exists (select from pg_catalog.pg_locks a join pg_catalog.pg_locks t on t.pid = a.pid
      where a.locktype = 'advisory' and a.granted and a.classid = ${high(key)}::oid and a.objid = ${low(key)}::oid
        and a.database = (select oid from pg_catalog.pg_database where datname = pg_catalog.current_database())
        and t.relation = pg_catalog.to_regclass('skills_db.migration_lock') and t.granted and t.mode <> 'AccessShareLock') as held`.execute(conn)
  return rows[0]?.held === true
}

async function holderOf(conn: Kysely<any>): Promise<string> {
  const key = await currentKey(conn)
  if (key === undefined) return '(session unknown)'
  const { rows } = await sql<{ who: string }>`
    -- Runs before the preflight has looked for planted operators: format(), not ||.
    select pg_catalog.format('pid %s%s', a.pid, case when a.application_name <> '' then pg_catalog.format(' (%s)', a.application_name) else '' end) as who
    from pg_catalog.pg_locks l join pg_catalog.pg_stat_activity a on a.pid = l.pid
    where l.locktype = 'advisory' and l.granted and l.database = (select oid from pg_catalog.pg_database where datname = pg_catalog.current_database())
      and l.classid = ${high(key)}::oid and l.objid = ${low(key)}::oid
    limit 1`.execute(conn)
  return rows[0]?.who ?? '(session unknown)'
}
