import type pg from 'pg'

/**
 * Lets a caller condemn a session of `pool` (by its backend pid): when that connection is
 * released, the pool closes it instead of handing it to the next caller. withTenant does this when
 * its clean-up fails and something of the request may still be on the session. Needs no SQL: a
 * session in that state may not even manage `pg_terminate_backend`.
 */
export function condemnableSessions(pool: pg.Pool): (pid: number) => void {
  const condemned = new Set<number>()
  const watch = (client: pg.PoolClient): pg.PoolClient => {
    // The pool gives each checkout a release function of its own; wrap this one.
    const release = client.release.bind(client)
    client.release = (err?: Error | boolean) => {
      const pid = (client as { processID?: number | null }).processID
      const condemn = pid != null && condemned.delete(pid)
      return release(err || (condemn ? new Error(`session ${pid} condemned: closed instead of reused`) : undefined))
    }
    return client
  }
  const connect = pool.connect.bind(pool) as (callback?: (err: Error | undefined, client?: pg.PoolClient, done?: (release?: unknown) => void) => void) => Promise<pg.PoolClient> | void
  pool.connect = ((callback?: (err: Error | undefined, client?: pg.PoolClient, done?: (release?: unknown) => void) => void) => {
    if (callback) return connect((err, client, done) => callback(err, client && watch(client), done))
    return (connect() as Promise<pg.PoolClient>).then(watch)
  }) as typeof pool.connect
  return (pid) => void condemned.add(pid)
}
