import { AsyncLocalStorage } from 'node:async_hooks'
import type pg from 'pg'

/**
 * Which pg client Kysely checked out for a `db.connection()` call: withTenant sends its BEGIN,
 * `enter()` and COMMIT on that client itself, pipelined (createDb's clients are in pg's pipeline
 * mode), while `fn`'s queries go through Kysely on the same connection. Kysely does not say which
 * client it took, so createDb's pool notes it in the caller's async context.
 */
const checkout = new AsyncLocalStorage<{ client?: pg.PoolClient }>()

/** Wraps `pool.connect` so that a client checked out inside {@link withCheckedOutClient} is noted there. */
export function notingCheckouts(pool: pg.Pool): void {
  const connect = pool.connect.bind(pool) as () => Promise<pg.PoolClient>
  pool.connect = ((callback?: unknown) => {
    if (callback) return (connect as unknown as (cb: unknown) => void)(callback)
    const box = checkout.getStore()
    return connect().then((client) => {
      if (box && box.client === undefined) box.client = client
      return client
    })
  }) as typeof pool.connect
}

/**
 * Runs `fn` in an async context where the next client createDb's pool hands out is noted; `fn`
 * reads it with the returned getter once it holds its connection. Undefined for a Kysely instance
 * made elsewhere.
 */
export function withCheckedOutClient<T>(fn: (client: () => pg.PoolClient | undefined) => Promise<T>): Promise<T> {
  const box: { client?: pg.PoolClient } = {}
  return checkout.run(box, () => fn(() => box.client))
}

const sent = new WeakMap<object, number>()

/**
 * Counts the queries sent on `client`, whoever sends them (Kysely, withTenant, the app through
 * the pool): withTenant skips the clean-up at a request's start when nothing has been sent on the
 * connection since its last clean-up, as nothing can have changed the session but a query.
 */
export function countingQueries(client: pg.ClientBase): void {
  sent.set(client, 0)
  // Looked up on the prototype at each call, not bound once: a wrapper installed later there (a
  // test's) still sees every query.
  client.query = ((...args: unknown[]) => {
    sent.set(client, (sent.get(client) ?? 0) + 1)
    return (Object.getPrototypeOf(client).query as (...a: unknown[]) => unknown).apply(client, args)
  }) as typeof client.query
}

/** How many queries `client` has sent (see {@link countingQueries}); undefined for a client not counted. */
export function queriesSent(client: pg.ClientBase): number | undefined {
  return sent.get(client)
}
