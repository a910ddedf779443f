import { AsyncLocalStorage } from 'node:async_hooks'
import { sql, type Kysely, type Transaction } from 'kysely'
import { condemnSession, lockTimeoutOf, tenantKeyOf } from '../connection/create-db.ts'
import type { DB } from '../db-types.ts'
import { CLEAN_UP, EnterRefused, inEnteredTransaction, refused } from './entered-transaction.ts'
import { parseTenantKey, signTenantContext, type TenantKey } from './tenant-key.ts'

export const MAX_TENANT_ID_LENGTH = 128

/**
 * The tenant context refused a call, with what to do in the message: withTenant's tenant id is
 * empty or malformed, the tenant is unknown or suspended, no tenant key was given, or withTenant
 * was called inside withTenant; the lifecycle calls' refusals from the database. Nothing was done
 * for the tenant. {@link TenantRequestError} and {@link TenantTakenError} are its kinds.
 */
export class TenantError extends Error {
  /** Always `'TenantError'`, so a log line or a check of `error.name` tells it apart. */
  override name = 'TenantError'
}

/**
 * What fn is told besides its transaction. Row security needs no tenant filter in the queries; a
 * distributed database (Citus) does, to route a query to the tenant's one shard instead of all:
 * `.where('tenant_id', '=', tenant.tenantId)`.
 */
export interface TenantScope {
  /** The tenant withTenant entered: the id it was called with. */
  tenantId: string
}

/** Set while a withTenant callback runs, so a nested call fails at once instead of waiting for a second connection. */
const inside = new AsyncLocalStorage<{ tenantId: string; db: Kysely<DB> }>()

/** The Kysely instance of the withTenant call under way (recordAudit finds its audit key there). */
export function withTenantDb(): Kysely<DB> | undefined {
  return inside.getStore()?.db
}

/**
 * Runs `fn` in a transaction scoped to one tenant: row-level security shows and accepts only that
 * tenant's rows, and inserts get its tenant_id by default. Connect as the application role:
 * superusers, BYPASSRLS roles and the owner are not held by its policies.
 *
 * The tenant is entered with a signature only the holder of the tenant key can make, over a
 * challenge of this session's, so SQL run inside `fn`, injected SQL included, cannot switch to another
 * tenant, nor carry this one past the clean-up into another request. BEGIN, the entry and `fn`'s
 * first statement go in one round trip: `fn` is called at once, and its first statement runs only if
 * the tenant is accepted (refused, it fails with the refusal). So `fn`'s code up to its first
 * statement runs before the tenant is known to be accepted; no statement of `fn`'s runs for a
 * refused one.
 *
 * The connection goes back to the pool clean: whatever `fn` left on the session (a setting, a
 * temporary table or function, a WITH HOLD cursor, a prepared statement, a LISTEN, an advisory
 * lock) is discarded before COMMIT, in the same round trip. If that fails, so does the request,
 * and its connection is closed. A request whose statements were all session-safe (the query
 * builder's select, insert, update or delete, made in `trx` during the request of what
 * session-safe-statements.ts lets through: no `sql`, no function but count, sum, avg, min and max,
 * qualified names only of known columns of unaliased tables) ends with COMMIT alone. Calling
 * withTenant inside `fn` is an error: use `trx`.
 *
 * On Citus, a transaction Citus rolls back for a statement caught by a shard's move or split
 * ("shard for the given value does not exist", 40001), or as the victim of its distributed
 * deadlock detection (40P01), runs `fn` again in a new one (3 tries in all). Keep what `fn` does
 * outside the database (a message sent, a file written) for after withTenant returns.
 *
 * @example
 * const skills = await withTenant(db, tenantId, (trx) =>
 *   trx.selectFrom('skills').select(['slug', 'name']).orderBy('total_uses', 'desc').limit(10).execute())
 * // On Citus, name the tenant too, so the query goes to its shard alone:
 * const one = await withTenant(db, tenantId, (trx, { tenantId }) =>
 *   trx.selectFrom('skills').selectAll().where('tenant_id', '=', tenantId).where('slug', '=', 'pdf-tools').executeTakeFirst())
 */
export async function withTenant<T>(db: Kysely<DB>, tenantId: string, fn: (trx: Transaction<DB>, tenant: TenantScope) => Promise<T>): Promise<T> {
  assertTenantId(tenantId)
  const outer = inside.getStore()
  if (outer !== undefined) {
    throw new TenantError(`withTenant called inside withTenant (tenant "${outer.tenantId.slice(0, 64)}"): use the transaction you were given`)
  }
  const key = keyFor(db)
  const lockTimeoutMs = lockTimeoutOf(db)
  const entry = { tenantId, key, ...(lockTimeoutMs === undefined ? {} : { lockTimeoutMs }) }
  const run = (trx: Transaction<DB>) => inside.run({ tenantId, db }, () => fn(trx, { tenantId }))
  for (let attempt = 1; ; attempt++) {
    // Whether this try went one statement at a time (the only way Citus's rollbacks are run again).
    let alone = false
    try {
      const pipelined = await inEnteredTransaction(db, entry, run)
      if (pipelined) return pipelined.value
      alone = true
      return await db.connection().execute((conn) => oneStatementAtATime(db, conn, entry, run))
    } catch (error) {
      if (error instanceof EnterRefused) throw new TenantError(error.message, { cause: error.cause })
      // Only one statement at a time (a Kysely instance made elsewhere, or Citus, known from the
      // session): on one server, SQL of fn's raising the same code and message must not make fn
      // run again (an outside review ran it 3 times).
      if (attempt >= CITUS_RETRY_ATTEMPTS || !citusRetryable(error) || !alone) throw error
    }
  }
}

/**
 * On `conn`, each statement in its own round trip, as before 0019: for a Kysely instance not made
 * by createDb, and on Citus.
 */
async function oneStatementAtATime<T>(db: Kysely<DB>, conn: Kysely<DB>, entry: { tenantId: string; key: TenantKey; lockTimeoutMs?: number }, run: (trx: Transaction<DB>) => Promise<T>): Promise<T> {
  let session: number | undefined
  try {
    return await conn.transaction().execute(async (trx) => {
      session = (await enterTenant(trx, entry.tenantId, entry.key, entry.lockTimeoutMs === undefined ? {} : { lockTimeoutMs: entry.lockTimeoutMs })).pid
      return await run(trx)
    })
  } finally {
    await cleanUp(db, conn, session)
  }
}

/** How many times withTenant runs a request that Citus rolled back for one of the reasons below. */
const CITUS_RETRY_ATTEMPTS = 3

/**
 * Citus's two rollbacks that a request run again gets past, as PostgreSQL's manual advises for
 * its class 40 errors: a statement planned before its table moved to other shards and run after
 * (Citus's shard moves and splits; run again, it goes to the new shards), and the victim of
 * Citus's distributed deadlock detection (1 request in about 15,000 while distribute adds a
 * foreign key back or distributes a table beside the app's writes). Nothing else: a request is
 * not run twice where the database did not ask for it.
 */
function citusRetryable(error: unknown): boolean {
  const e = error as { code?: string; message?: string }
  return (e?.code === '40001' && e.message === 'shard for the given value does not exist')
    || (e?.code === '40P01' && e.message === 'canceling the transaction since it was involved in a distributed deadlock')
}

/**
 * Makes `tenantId` the tenant of the current transaction, one statement at a time (withTenant's way
 * for a Kysely instance not made by createDb, and the tests'): asks the database for its challenge
 * (this backend, this transaction), signs it with `key`, and hands both to tenant_context.enter,
 * which checks the signature, that the tenant exists and is active. Two round trips (the first
 * also sets the transaction's lock_timeout, when asked). Returns the session's backend pid.
 */
export async function enterTenant(trx: Kysely<any>, tenantId: string, key: TenantKey, { lockTimeoutMs }: { lockTimeoutMs?: number } = {}): Promise<{ pid: number }> {
  const { rows } = await sql<{ challenge: string; pid: number }>`select tenant_context.challenge() as challenge, pg_catalog.pg_backend_pid() as pid
    ${lockTimeoutMs === undefined ? sql`` : sql`, pg_catalog.set_config('lock_timeout', ${`${lockTimeoutMs}ms`}::text, true) as lock_timeout`}`.execute(trx)
  const { challenge, pid } = rows[0]!
  const signature = signTenantContext(key, tenantId, challenge)
  try {
    await sql`select tenant_context.enter(${tenantId}::text, ${signature}::text)`.execute(trx)
  } catch (error) {
    const refusal = refused(error)
    throw refusal instanceof EnterRefused ? new TenantError(refusal.message, { cause: error }) : error
  }
  return { pid }
}

/**
 * {@link CLEAN_UP} after the transaction, for a Kysely instance not made by createDb. If it fails,
 * something of fn's may still be on the session, so it must serve nobody else: it is asked to end
 * itself, which is all that can be done for a pool made elsewhere.
 */
async function cleanUp(db: Kysely<DB>, conn: Kysely<DB>, pid: number | undefined): Promise<void> {
  try {
    await sql.raw(CLEAN_UP).execute(conn)
  } catch {
    if (pid !== undefined) condemnSession(db, pid)
    await sql`select pg_catalog.pg_terminate_backend(pg_catalog.pg_backend_pid())`.execute(conn).catch(() => {})
  }
}

const parsed = new Map<string, TenantKey>()

/** The key of `db` (createDb's tenantKey), else SKILLS_DB_TENANT_KEY; parsed once. `caller` names the API that needs it. */
export function keyFor(db: object, caller = 'withTenant'): TenantKey {
  const [text, what] = tenantKeyOf(db) !== undefined
    ? [tenantKeyOf(db)!, 'createDb option tenantKey']
    : [process.env.SKILLS_DB_TENANT_KEY, 'SKILLS_DB_TENANT_KEY']
  if (!text) {
    throw new TenantError(`${caller} has no tenant key: pass createDb(url, { tenantKey }) or set SKILLS_DB_TENANT_KEY to one of the keys the migrator was given (SKILLS_DB_TENANT_KEYS; on a checkout's embedded development server, . .data/dev-keys.env sets it)`)
  }
  let key = parsed.get(text)
  if (!key) {
    try {
      key = parseTenantKey(text, what)
    } catch (error) {
      throw new TenantError((error as Error).message)
    }
    parsed.set(text, key)
  }
  return key
}

function assertTenantId(tenantId: unknown): asserts tenantId is string {
  if (typeof tenantId !== 'string' || tenantId.trim() === '') throw new TenantError('tenant id is empty')
  if (tenantId.length > MAX_TENANT_ID_LENGTH) throw new TenantError(`tenant id is longer than ${MAX_TENANT_ID_LENGTH} characters`)
  if (tenantId.includes('\0')) throw new TenantError('tenant id contains a NUL byte')
}
