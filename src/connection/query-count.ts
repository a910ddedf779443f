import type pg from 'pg'

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
