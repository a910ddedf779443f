import { Transaction, type Dialect, type Driver, type Kysely } from 'kysely'
import type pg from 'pg'
import { condemnSession } from '../connection/create-db.ts'
import { poolOf } from '../connection/pipelined-pools.ts'
import { queriesSent } from '../connection/query-count.ts'
import { ClientConnection } from './client-connection.ts'
import type { DB } from '../db-types.ts'
import { signTenantContext, type TenantKey } from './tenant-key.ts'

/**
 * What fn may have left on the session goes, and so does every plan fn could have made and kept (a
 * prepared statement, a cursor, a function of its own): the tenant is a constant in those plans
 * (see 0008), so none may run in another transaction. Not DISCARD ALL: it also drops the plans of
 * tenant_context's own functions, which every transaction would then make again.
 */
export const CLEAN_UP = 'reset all; close all; deallocate all; discard temp; unlisten *; select pg_catalog.pg_advisory_unlock_all()'
/**
 * The same, as one statement (0019: a fraction of the server's time for the six above). A request
 * ends with the clean-up, then COMMIT, in one message: inside the transaction, so that behind a
 * pooler in transaction mode it runs on the server connection the request used (after COMMIT the
 * pooler may hand the next statement to another), and nothing of fn's runs after it. If any of it
 * fails, nothing is committed. A request that will not commit sends ROLLBACK first (fn's error may
 * have aborted the transaction), then the clean-up.
 */
const CLEAN_UP_CALL = 'select tenant_context.clean_up()'

/**
 * Read-write whatever the session's default: behind a transaction-mode pooler, SQL of another
 * request that committed and then set `default_transaction_read_only` on its server connection made
 * the next request there read-only from its BEGIN, before the clean-up could undo the setting, and
 * so failed (an outside review: 98 of about 3,200 of the other tenant's requests). enter() writes
 * (the mark), so a withTenant transaction is never read-only.
 */
const BEGIN = 'begin read write'

/**
 * What the app knows of a connection's session: the challenge of its next `enter()`
 * (`<pid>:<mark>`, migration 0019), or that it must ask for one in each transaction: behind a
 * pooler in transaction mode (the connection's pid is not the server's: each transaction may land
 * on another server connection), on Citus (every node checks the transaction's own challenge), or
 * on a database without 0019.
 */
interface SessionState {
  /** The challenge of the session's next entry (`<pid>:<mark>`), or 'per transaction'. */
  next: string | 'per transaction'
  /** session_challenge() answered NULL: the database is distributed by Citus. */
  citus: boolean
  /**
   * The count of the connection's queries (query-count.ts) when it was last known clean:
   * after the clean-up that ended a request, or a new connection's first query. While it is the
   * same, nothing can have left anything on the session, and a request skips the clean-up at its
   * start.
   */
  cleanAt?: number
  /** How the session's clean-up is sent: 0019's function, or (before it) the commands themselves. */
  cleanUp: string
  /** 0019's end_request() is there to check, before COMMIT, that fn left the transaction entered. */
  endRequest: boolean
}
const sessions = new WeakMap<pg.ClientBase, SessionState>()

/** enter()'s answer to a challenge that is not the session's current one (0019), or a session never given one (currval's). */
const STALE = new Set(['TC001', '55000'])

/** The challenge of an entry was not the session's: fn has not run; run the request again, asking first. */
export class StaleChallenge extends Error {
  override name = 'StaleChallenge'
}

/** Raised by enter(): the caller gets it as withTenant's error. */
export class EnterRefused extends Error {
  override name = 'EnterRefused'
}

export interface Entry {
  tenantId: string
  key: TenantKey
  lockTimeoutMs?: number
  /**
   * Ask for the challenge inside the transaction whatever the session's state: the request run
   * again after a stale challenge (a pooler that shows the client a server's pid but moves its
   * transactions would otherwise make the second try stale too).
   */
  askInTransaction?: boolean
}

/**
 * Runs `fn` in a transaction entered for `entry.tenantId`, on a connection it checks out of
 * createDb's pool itself (fn's queries go to that client through {@link ClientConnection}), in as
 * few round trips as the session allows besides fn's own statements:
 * - the session's challenge known (every request after a connection's first: enter() answers the
 *   next one): the clean-up, BEGIN and `enter()` in one round trip, the clean-up and COMMIT in one
 *   more;
 * - asked per transaction (behind a pooler): BEGIN, the clean-up and `challenge()` in one,
 *   `enter()`, the clean-up and COMMIT.
 *
 * The clean-up at the start undoes what SQL outside withTenant left on the session (on this pool's
 * connection or, behind a pooler, on whichever server connection the transaction landed on); the
 * one before COMMIT, what fn left. fn runs only once enter() has accepted: a refused tenant never
 * reaches fn's code, and a request run again after a stale challenge has run nothing of fn's.
 * (Sending fn's first statement behind enter() would save a round trip more, but run fn's code for
 * a tenant that is then refused.) A request whose fn ended the transaction (SQL's COMMIT or
 * ROLLBACK) fails. Undefined when `db` was not made by createDb, or with `pipelinedWithTenant: false`,
 * or on Citus (the session says so: docs/design/tenant-context.md): the caller enters one statement
 * at a time.
 */
export async function inEnteredTransaction<T>(db: Kysely<DB>, entry: Entry, fn: (trx: Transaction<DB>) => Promise<T>): Promise<{ value: T } | undefined> {
  const made = poolOf(db)
  if (!made) return undefined
  const client = await made.pool.connect()
  try {
    const state = sessions.get(client) ?? await askSession(client)
    return state.citus ? undefined : { value: await entered(db, client, made.dialect, state, entry, fn) }
  } finally {
    client.release()
  }
}

/** The request on `client`, checked out of createDb's pool for it: see {@link inEnteredTransaction}. */
async function entered<T>(db: Kysely<DB>, client: pg.PoolClient, dialect: Dialect, state: SessionState, entry: Entry, fn: (trx: Transaction<DB>) => Promise<T>): Promise<T> {
  // A request that will not commit: ROLLBACK first (fn's error may have aborted the transaction).
  const rolledBack = () => end(db, client, `rollback; ${state.cleanUp}`)
  const entering = state.next === 'per transaction' || entry.askInTransaction ? await enterAsking(client, state, entry) : enterKnowing(client, state, state.next, entry)
  await entering.outcome
  if (entering.error) {
    await rolledBack()
    throw entering.error
  }
  const open = { now: true, pending: new Set<Promise<unknown>>() }
  let value: T
  try {
    value = await fn(transactionOn(db, client, dialect, open))
  } catch (error) {
    await closed(open)
    await rolledBack()
    throw error
  }
  await closed(open)
  // SQL of fn's that ended the transaction (COMMIT, ROLLBACK): what came before it is committed
  // or not as that SQL chose, and what came after ran with no tenant. The request fails.
  const status = (client as { getTransactionStatus?: () => string | null }).getTransactionStatus?.()
  if (status === 'I') {
    await end(db, client, state.cleanUp)
    throw new Error('withTenant: SQL in fn ended the transaction (COMMIT or ROLLBACK); the request failed, and what it wrote before that may have been committed')
  }
  if (status === 'E') {
    await rolledBack()
    throw new Error(ABORTED)
  }
  const ending = client.query(state.endRequest ? 'select tenant_context.end_request(true); commit' : `${state.cleanUp}; commit`)
  // Counted as sent now: a query sent after this one, before its answer, makes the next request clean first.
  const cleanAt = queriesSent(client)
  try {
    await ending
    state.cleanAt = cleanAt
  } catch (error) {
    await rolledBack()
    const code = (error as { code?: string }).code
    if (code === '25P02') throw new Error(ABORTED, { cause: error })
    if (code === 'TC002') throw new Error('withTenant: no tenant was entered any more when fn returned (SQL in fn ended the transaction, or reset or switched the tenant context); the request failed and was rolled back (what such SQL committed itself stays)', { cause: error })
    throw error
  }
  return value
}

const ABORTED = 'withTenant: fn returned, but one of its statements had failed and aborted the transaction: nothing was committed'

/** The session's first request: ask for its challenge (0019), or learn that it must be asked per transaction. */
async function askSession(client: pg.PoolClient): Promise<SessionState> {
  const state: SessionState = { next: 'per transaction', citus: false, cleanUp: CLEAN_UP_CALL, endRequest: true }
  // The clean-up first, in the same write: SQL sent on the new connection before its first request
  // (a read-only default, a setting, a lock) is gone before session_challenge() and the request.
  const [cleaned, asked] = inOneWrite(client, () => [
    client.query(CLEAN_UP_CALL),
    client.query<{ c: string | null; pid: number }>('select tenant_context.session_challenge() as c, pg_catalog.pg_backend_pid() as pid'),
  ] as const)
  const cleanAt = queriesSent(client)
  await pipelineOff(client, [cleaned, asked])
  try {
    await cleaned
    const { rows } = await asked
    const challenge = rows[0]?.c
    // A pooler's connection shows a pid of its own, not the server's (PgBouncer makes one up).
    const direct = rows[0]?.pid === (client as { processID?: number }).processID
    state.citus = challenge === null
    if (challenge && direct) state.next = challenge
    state.cleanAt = cleanAt
  } catch (error) {
    // A database before 0019 has neither session_challenge() nor clean_up().
    if ((error as { code?: string }).code !== '42883') throw error
    state.cleanUp = CLEAN_UP
    state.endRequest = false
  }
  sessions.set(client, state)
  return state
}

interface Entered {
  /** Settles (never rejects) once the server answered BEGIN and enter(). */
  outcome: Promise<void>
  error?: Error
}

/**
 * The clean-up, BEGIN and enter() sent together, signed for the challenge the session holds, in
 * one write (a write costs this client more than the server's whole work for enter()); enter()
 * answers the challenge after it. The clean-up goes before BEGIN, so that a setting SQL left on
 * the session (default_transaction_read_only, say) is gone before the transaction takes it up;
 * it is left out when no query has been sent on the connection since the last request's clean-up.
 * The values are bound parameters: a statement's text is shown to every session of the role
 * (pg_stat_activity), and the tenant and signature must not be.
 */
function enterKnowing(client: pg.PoolClient, state: SessionState, challenge: string, entry: Entry): Entered {
  const entered: Entered = { outcome: Promise.resolve() }
  const clean = state.cleanAt === undefined || queriesSent(client) !== state.cleanAt
  const [cleaned, begun, answer] = inOneWrite(client, () => [
    clean ? client.query(state.cleanUp) : undefined,
    client.query(BEGIN),
    client.query<{ next: string }>(`select ${lockTimeout(entry, 4)}tenant_context.enter($1::text, $2::text, $3::text) as next`,
      [entry.tenantId, challenge, signTenantContext(entry.key, entry.tenantId, challenge), ...lockTimeoutValue(entry)]),
  ] as const)
  entered.outcome = pipelineOff(client, [cleaned, begun, answer]).then(() => Promise.all([cleaned, begun, answer])).then(([, , { rows }]) => {
    state.next = rows[0]!.next
  }, (error) => {
    // A refusal raises before the mark moves, so the challenge stays good; a stale one is asked for again.
    if (STALE.has(error?.code)) sessions.delete(client)
    entered.error = STALE.has(error?.code) ? new StaleChallenge(error.message, { cause: error }) : refused(error)
  })
  return entered
}

/**
 * Runs `send` with the connection's socket corked, so the queries it submits (pg in pipeline mode
 * writes each at once) leave in one write. A pg without the socket where this expects it sends
 * them as it would anyway: one write each, same order.
 */
function inOneWrite<T>(client: pg.PoolClient, send: () => T): T {
  const c = client as { pipeline?: boolean; connection?: { stream?: { cork?: () => void; uncork?: () => void } } }
  const stream = c.connection?.stream
  // pg's pipeline mode for these queries only: the caller turns it off once they are all answered
  // (pg reads the flag when it sends, and when an answer comes for what it sent), so the pool's
  // other queries go one at a time as without it.
  c.pipeline = true
  stream?.cork?.()
  try {
    return send()
  } finally {
    stream?.uncork?.()
  }
}

/** Back to one query at a time, once everything sent in one write is answered. */
async function pipelineOff(client: pg.PoolClient, sent: readonly unknown[]): Promise<void> {
  await Promise.allSettled(sent)
  ;(client as { pipeline?: boolean }).pipeline = false
}

/**
 * BEGIN, the clean-up and challenge() in one round trip, then enter(). Behind a pooler in
 * transaction mode the clean-up must be inside the transaction to run on its server connection; a
 * setting of the transaction itself is taken up by BEGIN before it: read-only no more ({@link BEGIN}
 * says read-write), but the isolation level still.
 */
async function enterAsking(client: pg.PoolClient, state: SessionState, entry: Entry): Promise<Entered> {
  const [begun, cleaned, asked] = inOneWrite(client, () => [
    client.query(BEGIN),
    client.query(state.cleanUp),
    client.query<{ c: string }>(`select ${lockTimeout(entry, 1)}tenant_context.challenge() as c`, lockTimeoutValue(entry)),
  ] as const)
  await pipelineOff(client, [begun, cleaned, asked])
  const entered: Entered = { outcome: Promise.resolve() }
  let challenge: string
  try {
    await begun
    await cleaned
    challenge = (await asked).rows[0]!.c
  } catch (error) {
    entered.error = refused(error)
    return entered
  }
  const answer = client.query('select tenant_context.enter($1::text, $2::text)', [entry.tenantId, signTenantContext(entry.key, entry.tenantId, challenge)])
  entered.outcome = answer.then(() => {}, (error) => { entered.error = refused(error) })
  return entered
}

const lockTimeout = (entry: Entry, parameter: number) =>
  entry.lockTimeoutMs === undefined ? '' : `pg_catalog.set_config('lock_timeout', $${parameter}::text, true), `
const lockTimeoutValue = (entry: Entry) => entry.lockTimeoutMs === undefined ? [] : [`${entry.lockTimeoutMs}ms`]

/** enter()'s refusal (42501, with a hint) as one line; anything else as it came. */
export function refused(error: unknown): Error {
  const e = error as { code?: string; message?: string; hint?: string }
  if (e?.code !== '42501' || !e.message) return error as Error
  return new EnterRefused(e.hint ? `${e.message}: ${e.hint}` : e.message, { cause: error })
}

/**
 * Ends a transaction that will not commit. If the clean-up fails (SQL can make it fail: enough
 * temporary objects exhaust the lock table DISCARD TEMP needs), something of fn's may still be on
 * the session, so it must serve nobody else: condemned, the pool closes it on release instead of
 * handing it on, and no request waits on it.
 */
async function end(db: Kysely<DB>, client: pg.PoolClient, statements: string): Promise<void> {
  try {
    await client.query(statements)
  } catch {
    condemned(db, client)
  }
}

function condemned(db: Kysely<DB>, client: pg.PoolClient): void {
  sessions.delete(client)
  condemnSession(db, (client as { processID?: number }).processID ?? -1)
}

/**
 * fn's transaction: Kysely's Transaction over the connection withTenant holds. Once fn has
 * returned or thrown it refuses every query, and the queries fn started and did not wait for are
 * waited for before the request ends (an outside review had a chain of them run inside the next
 * request, another tenant's, and read its rows): nothing of fn's reaches the connection's next user.
 */
function transactionOn(db: Kysely<DB>, client: pg.PoolClient, dialect: Dialect, open: { now: boolean; pending: Set<Promise<unknown>> }): Transaction<DB> {
  const connection = new ClientConnection(client)
  const executor = db.getExecutor().withConnectionProvider({
    provideConnection(consumer) {
      if (!open.now) throw new Error('this withTenant transaction has ended: use trx only inside fn, and wait for its queries there')
      const running = consumer(connection)
      const settled = running.then(() => {}, () => {})
      open.pending.add(settled)
      void settled.then(() => open.pending.delete(settled))
      return running
    },
  })
  return new Transaction<DB>({ config: { dialect }, dialect, driver: NO_DRIVER, executor })
}

/** No query of fn's from now on; those it started are waited for. */
async function closed(open: { now: boolean; pending: Set<Promise<unknown>> }): Promise<void> {
  open.now = false
  while (open.pending.size > 0) await Promise.all([...open.pending])
}

/** A Transaction has no use for a driver (it refuses transaction(), connection() and destroy()). */
const NO_DRIVER: Driver = {
  init: async () => {},
  acquireConnection: () => { throw new Error('not available in a withTenant transaction') },
  beginTransaction: () => { throw new Error('not available in a withTenant transaction') },
  commitTransaction: () => { throw new Error('not available in a withTenant transaction') },
  rollbackTransaction: () => { throw new Error('not available in a withTenant transaction') },
  releaseConnection: async () => {},
  destroy: async () => {},
}
