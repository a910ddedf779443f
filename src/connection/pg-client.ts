import pg from 'pg'

/**
 * A connected single pg client, for what a pool does not fit (one session held on purpose, a
 * statement on another database). It listens for 'error': a client the server closes while it is
 * idle or ending (a restart, pg_terminate_backend, a database dropped WITH (FORCE)) must not crash
 * the process, and a query in flight fails with the error anyway. Pools come from createDb.
 */
export async function connectClient(config: pg.ClientConfig): Promise<pg.Client> {
  const client = new pg.Client(config)
  client.on('error', () => {})
  await client.connect()
  return client
}
