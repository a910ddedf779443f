import { Transaction, type Dialect, type Driver, type Kysely } from 'kysely'
import type pg from 'pg'
import { condemnSession } from '../connection/create-db.ts'
import { poolOf } from '../connection/pipelined-pools.ts'
import { queriesSent } from '../connection/query-count.ts'
import { ClientConnection, type RunStatement } from './client-connection.ts'
import { KNOWN_RELATIONS, knownRelations, SESSION_CHANGING_REACHABLE, SessionSafeExecutor, type KnownRelations } from './session-safe-statements.ts'
import { batchesSupported, sendBatch, type BatchAnswer, type BatchStatement } from '../connection/one-sync-batch.ts'
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
/** 0019's end of a request: the check that fn left the transaction entered (TC002), then the clean-up. */
const END_REQUEST = 'select tenant_context.end_request(true)'
/** 0021's: the same in one function without EXECUTE or an exception block (about 20 µs less). */
const FINISH_REQUEST = 'select tenant_context.finish_request()'

/**
 * How a request begins: read-write, at the isolation level the session starts with, whatever SQL
 * has since set as the session's default. Behind a transaction-mode pooler, SQL of another request
 * that committed and then set `default_transaction_read_only` on its server connection made the
 * next request there read-only from its BEGIN (an outside review: 98 of about 3,200 of the other
 * tenant's requests failed); enter() writes (the mark), so a withTenant transaction is never
 * read-only. The clean-up that undoes such settings runs after BEGIN, in the same round trip, so
 * BEGIN names what it would otherwise take from them.
 */
const beginAt = (isolation: string) => `begin isolation level ${ISOLATION_LEVELS.has(isolation) ? isolation : 'read committed'} read write`
const ISOLATION_LEVELS = new Set(['read uncommitted', 'read committed', 'repeatable read', 'serializable'])

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
  /** The session's clean-up as statements of a batch: 0019's function, or (before it) the commands themselves. */
  cleanUp: string[]
  /** How a request ends before COMMIT: 0021's finish_request(), 0019's end_request(true), or (before 0019) the clean-up alone. */
  end: string
  /** The BEGIN of this session's requests ({@link beginAt}). */
  begin: string
  /**
   * A request whose statements were all session-safe may end with COMMIT alone: when the session
   * was last asked, nothing such a statement could make PostgreSQL run could change the session
   * (SESSION_CHANGING_REACHABLE in session-safe-statements.ts).
   */
  commitAlone: boolean
  /** The relations the app role may use, their columns, and which a write may name (session-safe-statements.ts). */
  relations: KnownRelations
  /** When the session was asked (Date.now()): asked again once that is {@link ASKED_FOR} ago. */
  askedAt: number
}

/**
 * How long what a session was asked holds: the catalog can change under an open pool (a migration
 * drops a column, an operator adds a function of a row), and what commitAlone and relations say must
 * follow it (review 3: a column dropped and a function of its name made, while the pool was open).
 * One more round trip and 7–19 ms of the server's a minute per connection.
 */
const ASKED_FOR = 60_000
const sessions = new WeakMap<pg.ClientBase, SessionState>()

/** enter()'s answer to a challenge that is not the session's current one (0019), or a session never given one (currval's). */
const STALE = new Set(['TC001', '55000'])

/** Raised by enter(): the caller gets it as withTenant's error. */
export class EnterRefused extends Error {
  override name = 'EnterRefused'
}

export interface Entry {
  tenantId: string
  key: TenantKey
  lockTimeoutMs?: number
}

/**
 * Runs `fn` in a transaction entered for `entry.tenantId`, on a connection it checks out of
 * createDb's pool itself (fn's queries go to that client through {@link ClientConnection}), in as
 * few round trips as the session allows: BEGIN, `enter()` and fn's first statement in one (each a
 * statement of its own, with bound parameters, and one Sync after the last: {@link sendBatch}),
 * fn's other statements, then the clean-up and COMMIT in one more. Behind a pooler (the challenge
 * asked for in each transaction) BEGIN, the clean-up and `challenge()` go first, in a round trip
 * of their own.
 *
 * fn's first statement is sent before `enter()` has answered, behind it, but it runs only if
 * `enter()` accepted: if `enter()` fails the server skips everything up to the Sync, and the
 * transaction is aborted. So no statement of fn's runs for a refused tenant; what fn's code does
 * before its first statement does run (see withTenant). A challenge gone stale (SQL of an earlier
 * request asked the session for a new one) is asked for again in the same request, and fn's first
 * statement sent again: fn runs once.
 *
 * The clean-up at the start undoes what SQL outside withTenant left on the session (on this pool's
 * connection or, behind a pooler, on whichever server connection the transaction landed on); the
 * one before COMMIT, what fn left. A request whose fn ended the transaction (SQL's COMMIT or
 * ROLLBACK) fails. Undefined when `db` was not made by createDb, or with `pipelinedWithTenant:
 * false`, or on Citus (the session says so: docs/design/tenant-context.md): the caller enters one
 * statement at a time.
 */
export async function inEnteredTransaction<T>(db: Kysely<DB>, entry: Entry, fn: (trx: Transaction<DB>) => Promise<T>): Promise<{ value: T } | undefined> {
  const made = poolOf(db)
  if (!made || !batchesSupported) return undefined
  const client = await made.pool.connect()
  try {
    const known = sessions.get(client)
    const state = known && Date.now() - known.askedAt < ASKED_FOR ? known : await askSession(client)
    return state.citus ? undefined : { value: await entered(db, client, made.dialect, state, entry, fn) }
  } finally {
    client.release()
  }
}

/** The request on `client`, checked out of createDb's pool for it: see {@link inEnteredTransaction}. */
async function entered<T>(db: Kysely<DB>, client: pg.PoolClient, dialect: Dialect, state: SessionState, entry: Entry, fn: (trx: Transaction<DB>) => Promise<T>): Promise<T> {
  // A request that will not commit: ROLLBACK first (fn's error may have aborted the transaction).
  const rolledBack = () => end(db, client, ['rollback', ...state.cleanUp].join('; '))
  const entering = new Entering(client, state, entry)
  const open: Open = { now: true, over: false, pending: new Set<Promise<unknown>>() }
  // Whether a statement of fn's could have left something on the session or ended the transaction
  // (anything but a session-safe statement: session-safe-statements.ts).
  let touched = false
  // fn's statements; none once the request is over (an outside review had a connection object fn
  // kept run SQL inside the next request on the same client, another tenant's).
  const run: RunStatement = (text, values, sessionSafe) => {
    if (open.over) return Promise.reject(new Error(ENDED))
    touched ||= !sessionSafe
    return entering.run(text, values)
  }
  let value: T
  let failed: { error: unknown } | undefined
  try {
    const running = fn(transactionOn(db, dialect, state.relations, open, run))
    // fn's first statement goes with the entry; if fn has sent none by the time its synchronous
    // part and the promises it set off have run, the entry goes alone.
    entering.sendSoon()
    value = await running
  } catch (error) {
    failed = { error }
  }
  await closed(open)
  open.over = true
  // fn failed before sending anything: nothing was begun, nothing to end (and nothing is to be sent
  // on the connection once it is back in the pool).
  if (failed && !entering.sent) {
    entering.cancel()
    throw failed.error
  }
  await entering.answered()
  if (entering.error) {
    await rolledBack()
    throw entering.error
  }
  if (failed) {
    await rolledBack()
    throw failed.error
  }
  // SQL of fn's that ended the transaction (COMMIT, ROLLBACK): what came before it is committed
  // or not as that SQL chose, and what came after ran with no tenant. The request fails.
  const status = await transactionStatus(client)
  if (status === 'I') {
    await end(db, client, state.cleanUp.join('; '))
    throw new Error('withTenant: SQL in fn ended the transaction (COMMIT or ROLLBACK); the request failed, and what it wrote before that may have been committed')
  }
  if (status === 'E') {
    await rolledBack()
    throw new Error(ABORTED)
  }
  // fn's statements were all session-safe (and the database lets nothing such a statement reaches
  // change the session): nothing of the session to check or clean up, COMMIT alone. Otherwise the
  // check that the transaction is still the one entered, and the clean-up, before COMMIT in the
  // same round trip.
  const ending = client.query(touched || !state.commitAlone ? `${state.end}; commit` : 'commit')
  // Counted as sent now: a query sent after this one, before its answer, makes the next request clean first.
  const cleanAt = queriesSent(client)
  try {
    await ending
    state.cleanAt = cleanAt
  } catch (error) {
    await rolledBack()
    const code = (error as { code?: string }).code
    if (code === '25P02') throw new Error(ABORTED, { cause: error })
    // 55000: SQL of fn's discarded the session's mark (DISCARD SEQUENCES), which 0021's check reads itself.
    if (code === 'TC002' || code === '55000') throw new Error('withTenant: no tenant was entered any more when fn returned (SQL in fn ended the transaction, or reset or switched the tenant context); the request failed and was rolled back (what such SQL committed itself stays)', { cause: error })
    throw error
  }
  return value!
}

const ABORTED = 'withTenant: fn returned, but one of its statements had failed and aborted the transaction: nothing was committed'
const ENDED = 'this withTenant transaction has ended: use trx only inside fn, and wait for its queries there'

/**
 * The client's transaction status once the server's last answer is in: pg settles a query that
 * failed at the server's error, before the ReadyForQuery that carries the status, so a status read
 * at once can be the one from before (an outside review: an aborted transaction read as ended).
 */
async function transactionStatus(client: pg.PoolClient): Promise<string | null | undefined> {
  const c = client as unknown as { readyForQuery?: boolean; connection?: NodeJS.EventEmitter; getTransactionStatus?: () => string | null }
  if (c.readyForQuery === false && c.connection) {
    const connection = c.connection
    await new Promise<void>((resolve) => {
      const done = () => {
        connection.off('readyForQuery', done)
        connection.off('end', done)
        resolve()
      }
      connection.once('readyForQuery', done)
      connection.once('end', done)
    })
  }
  return c.getTransactionStatus?.()
}

/** The session's first request: ask for its challenge (0019), or learn that it must be asked per transaction. */
async function askSession(client: pg.PoolClient): Promise<SessionState> {
  const state: SessionState = { next: 'per transaction', citus: false, cleanUp: [CLEAN_UP_CALL], end: END_REQUEST, begin: beginAt('read committed'), commitAlone: false, relations: { columns: new Map(), plainTables: new Set() }, askedAt: Date.now() }
  // The clean-up first, in the same round trip: SQL sent on the new connection before its first
  // request (a read-only default, a setting, a lock) is gone before session_challenge() and the
  // request, and the isolation level read after it is the session's own. In a transaction of its
  // own, read-write (session_challenge() writes the mark) whatever default SQL left.
  const asked = await sendBatch(client, [
    { text: 'begin read write' },
    { text: CLEAN_UP_CALL },
    { text: `select tenant_context.session_challenge() as c, pg_catalog.pg_backend_pid() as pid, pg_catalog.current_setting('default_transaction_isolation') as isolation,
      pg_catalog.to_regprocedure('tenant_context.finish_request()') is not null as finish, not exists (${SESSION_CHANGING_REACHABLE}) as commit_alone, (${KNOWN_RELATIONS}) as relations` },
    { text: 'commit' },
  ])
  const cleanAt = queriesSent(client)
  const [, cleaned, challenged, committed] = asked as [BatchAnswer, BatchAnswer, BatchAnswer, BatchAnswer]
  if (cleaned.ok && challenged.ok && committed.ok) {
    const row = challenged.result.rows[0] as { c: string | null; pid: number; isolation: string; finish: boolean; commit_alone: boolean; relations: [string, string[], boolean][] }
    // A pooler's connection shows a pid of its own, not the server's (PgBouncer makes one up).
    const direct = row.pid === (client as { processID?: number }).processID
    state.citus = row.c === null
    if (row.c && direct) state.next = row.c
    state.begin = beginAt(row.isolation)
    if (row.finish) state.end = FINISH_REQUEST
    state.commitAlone = row.commit_alone
    state.relations = knownRelations(row.relations)
    state.cleanAt = cleanAt
  } else {
    const error = (asked.find((a) => !a.ok) as { error: Error }).error
    // The transaction is left aborted (the server skipped the COMMIT): ended before anything else.
    await client.query('rollback')
    // A database before 0019 has neither session_challenge() nor clean_up(): its clean-up is the commands themselves.
    if ((error as { code?: string }).code !== '42883') throw error
    state.cleanUp = CLEAN_UP.split('; ')
    state.end = CLEAN_UP
    const isolation = (await sendBatch(client, ['begin read write', ...state.cleanUp, `select pg_catalog.current_setting('default_transaction_isolation') as isolation`, 'commit'].map((text) => ({ text })))).at(-2)!
    if (!isolation.ok) {
      await client.query('rollback')
      throw isolation.error
    }
    state.begin = beginAt((isolation.result.rows[0] as { isolation: string }).isolation)
  }
  sessions.set(client, state)
  return state
}

/**
 * The tenant's entry of one request, sent with fn's first statement: {@link Entering.run} is how
 * fn's statements reach the connection. The first that comes before the entry is sent goes in the
 * same batch, behind `enter()`; the others wait for the entry's answer.
 */
class Entering {
  sent = false
  /** Why the tenant was not entered (a refusal, a failed clean-up): the request's error. */
  error: Error | undefined
  private answer: Promise<void> = Promise.resolve()
  private timer: NodeJS.Immediate | undefined
  /** The first statement's copy in the batch did not run (a stale challenge, entered again since): send it again. */
  private again = false

  constructor(private readonly client: pg.PoolClient, private readonly state: SessionState, private readonly entry: Entry) {}

  readonly run = async (text: string, values: readonly unknown[]): Promise<pg.QueryResult> => {
    if (!this.sent && !sentAsOneStatement(text, values)) {
      // pg sends it as a simple query, where several statements may go in one text: after the entry.
      void this.send([])
    }
    if (!this.sent) {
      const answers = this.send([{ text, values }])
      await this.answer
      if (this.error) throw this.error
      if (!this.again) {
        const answer = (await answers).at(-1)!
        if (!answer.ok) throw answer.error
        return answer.result
      }
    } else {
      await this.answer
      if (this.error) throw this.error
    }
    return this.client.query(text, values as unknown[])
  }

  sendSoon(): void {
    if (!this.sent) this.timer = setImmediate(() => { if (!this.sent) void this.send([]) })
  }

  /** Nothing is to be sent: fn failed before its first statement. */
  cancel(): void {
    this.sent = true
    if (this.timer) clearImmediate(this.timer)
  }

  /** Sends the entry if fn sent nothing, and waits for its answer. */
  answered(): Promise<void> {
    if (!this.sent) void this.send([])
    return this.answer
  }

  /** The entry and `first` in one batch (behind a pooler, after a round trip that asks for the challenge); resolves to the batch's answers. */
  private send(first: BatchStatement[]): Promise<BatchAnswer[]> {
    this.sent = true
    if (this.timer) clearImmediate(this.timer)
    const { client, state, entry } = this
    if (state.next === 'per transaction') {
      const answers = this.enterAsking(first, [])
      this.answer = answers.then(() => {}, (error) => { this.error = refused(error) })
      return answers.catch(() => [])
    }
    const challenge = state.next
    // The clean-up at the start only when something was sent on the connection since the last
    // request's (outside withTenant); inside the transaction, behind BEGIN (see beginAt).
    const clean = state.cleanAt === undefined || queriesSent(client) !== state.cleanAt
    const entering: BatchStatement[] = [
      { text: state.begin },
      ...(clean ? state.cleanUp.map((text) => ({ text })) : []),
      {
        text: `select ${lockTimeout(entry, 4)}tenant_context.enter($1::text, $2::text, $3::text) as next`,
        values: [entry.tenantId, challenge, signTenantContext(entry.key, entry.tenantId, challenge), ...lockTimeoutValue(entry)],
      },
    ]
    const answers = sendBatch(client, [...entering, ...first])
    this.answer = answers.then(async (all) => {
      const refusal = all.slice(0, entering.length).find((a) => !a.ok) as { error: Error } | undefined
      if (!refusal) {
        state.next = (all[entering.length - 1] as { result: pg.QueryResult }).result.rows[0].next
        return
      }
      if (!STALE.has((refusal.error as { code?: string }).code ?? '')) {
        // A refusal raises before the mark moves, so the challenge stays good.
        this.error = refused(refusal.error)
        return
      }
      // The session's challenge had moved on (SQL of an earlier request asked for a new one):
      // nothing of fn's ran. Asked for in the transaction this time, then fn's first statement again.
      sessions.delete(client)
      await this.enterAsking([], ['rollback'])
      this.again = first.length > 0
    }).catch((error) => { this.error ??= refused(error) })
    return answers.catch(() => [])
  }

  /**
   * BEGIN, the clean-up and challenge() in one round trip, then enter() and `first` in another.
   * Behind a pooler in transaction mode the clean-up must be inside the transaction to run on its
   * server connection. Resolves to the second batch's answers; rejects with the first failure.
   */
  private async enterAsking(first: BatchStatement[], before: string[]): Promise<BatchAnswer[]> {
    const { client, state, entry } = this
    const asked = await sendBatch(client, [
      ...before.map((text) => ({ text })),
      { text: state.begin },
      ...state.cleanUp.map((text) => ({ text })),
      { text: `select ${lockTimeout(entry, 1)}tenant_context.challenge() as c`, values: lockTimeoutValue(entry) },
    ])
    const failure = asked.find((a) => !a.ok) as { error: Error } | undefined
    if (failure) throw failure.error
    const challenge = (asked.at(-1) as { result: pg.QueryResult }).result.rows[0].c as string
    const answers = await sendBatch(client, [
      { text: 'select tenant_context.enter($1::text, $2::text)', values: [entry.tenantId, signTenantContext(entry.key, entry.tenantId, challenge)] },
      ...first,
    ])
    if (!answers[0]!.ok) throw answers[0]!.error
    return answers
  }
}

/**
 * Whether a statement of fn's can go in a batch as it would go alone: a batch sends each text as
 * one extended-protocol statement, as pg does a text with parameters; a text without any pg sends
 * as a simple query, which may hold several statements (`create …; select …`): unless it holds no
 * semicolon, it waits for the entry's answer and goes as pg sends it.
 */
const sentAsOneStatement = (text: string, values: readonly unknown[]) => values.length > 0 || !text.includes(';')

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
function transactionOn(db: Kysely<DB>, dialect: Dialect, relations: KnownRelations, open: Open, run: RunStatement): Transaction<DB> {
  // The connection asks the executor whether it compiled a query as session-safe in this request.
  const connection = new ClientConnection(run, (compiled) => executor.safe.has(compiled))
  const executor: SessionSafeExecutor = SessionSafeExecutor.of(dialect, relations, {
    provideConnection(consumer) {
      if (!open.now) throw new Error(ENDED)
      const running = consumer(connection)
      const settled = running.then(() => {}, () => {})
      open.pending.add(settled)
      void settled.then(() => open.pending.delete(settled))
      return running
    },
  }, db.getExecutor().plugins)
  return new Transaction<DB>({ config: { dialect }, dialect, driver: NO_DRIVER, executor })
}

/** fn's side of the request: `now` while fn may start queries, `over` once those it started are done. */
interface Open {
  now: boolean
  over: boolean
  pending: Set<Promise<unknown>>
}

/** No query of fn's from now on; those it started are waited for. */
async function closed(open: Open): Promise<void> {
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
