import path from 'node:path'
import { parseDatabaseUrl, withDatabase } from './database-url.ts'
import { startEmbeddedPostgres } from './embedded-postgres.ts'
import { connectClient } from './pg-client.ts'

/** Where the embedded server keeps its data: under the directory the command runs in (git-ignored in skills-db's checkout). */
export const embeddedDataDir = (cwd = process.cwd()) => path.join(cwd, '.data', 'embedded-pg')
export const EMBEDDED_DATABASE = 'skills'

export interface DatabaseSource {
  url: string
  /** Set when no DATABASE_URL was given and an embedded server was started for this call. */
  embedded?: { port: number; dataDir: string }
}

/**
 * Runs `cb` against DATABASE_URL, or — when it is unset — against an embedded PostgreSQL kept in
 * `.data/embedded-pg`, started for the call and always stopped afterwards (Ctrl-C included: the
 * embedded-postgres package stops its servers on SIGINT/SIGTERM). The embedded server needs the
 * embedded-postgres package: skills-db's own checkout has it, an app that installed skills-db
 * normally does not, and gets an error asking for a URL.
 */
export async function usingDatabase<T>(
  env: NodeJS.ProcessEnv,
  cb: (source: DatabaseSource) => Promise<T>,
): Promise<T> {
  if (env.DATABASE_URL) {
    parseDatabaseUrl(env.DATABASE_URL)
    return cb({ url: env.DATABASE_URL })
  }
  const port = Number(env.EMBEDDED_PG_PORT ?? 54329)
  if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new Error(`EMBEDDED_PG_PORT "${env.EMBEDDED_PG_PORT}" is not a port number`)
  const server = await startEmbeddedPostgres({ dataDir: embeddedDataDir(), port })
  try {
    const admin = await connectClient({ connectionString: server.adminUrl })
    try {
      const { rowCount } = await admin.query('select 1 from pg_database where datname = $1', [EMBEDDED_DATABASE])
      if (!rowCount) await admin.query(`create database ${EMBEDDED_DATABASE}`)
    } finally {
      await admin.end()
    }
    return await cb({ url: withDatabase(server.adminUrl, EMBEDDED_DATABASE), embedded: { port, dataDir: server.dataDir } })
  } finally {
    await server.stop()
  }
}
