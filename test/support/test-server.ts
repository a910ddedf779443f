import { chmodSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { createServer } from 'node:net'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { startEmbeddedPostgres, stopOrphanPostmaster } from '../../src/connection/embedded-postgres.ts'
import { embeddedModuleFor } from './pg-majors.ts'
import { isAlive } from './run-id.ts'

export interface TestServer {
  adminUrl: string
  source: 'TEST_DATABASE_URL' | 'testcontainers' | 'embedded'
  stop(): Promise<void>
}

const TMP_PREFIX = 'skills-db-test-'

/**
 * One PostgreSQL per test run: TEST_DATABASE_URL when set, else Testcontainers when a container
 * runtime answers, else an embedded server in a temporary directory (PostgreSQL 17, or the major
 * in EMBEDDED_PG_MAJOR: 14, 16 or 18, installed on first use). Tests run it without fsync; `durable` keeps fsync on, for
 * measurements whose subject is I/O (the bench).
 */
export async function startTestServer({ durable = false }: { durable?: boolean } = {}): Promise<TestServer> {
  if (process.env.TEST_DATABASE_URL) {
    return { adminUrl: process.env.TEST_DATABASE_URL, source: 'TEST_DATABASE_URL', stop: async () => {} }
  }
  const container = process.env.EMBEDDED_PG_MAJOR ? undefined : await tryTestcontainers()
  if (container) return container
  await sweepOrphanEmbeddedServers()
  const dataDir = mkdtempSync(path.join(tmpdir(), TMP_PREFIX))
  chmodSync(dataDir, 0o755) // the server runs as the postgres OS user, who must reach its data dir
  writeFileSync(path.join(dataDir, 'owner.pid'), String(process.pid))
  const module = embeddedModuleFor(process.env.EMBEDDED_PG_MAJOR ? Number(process.env.EMBEDDED_PG_MAJOR) : undefined)
  const server = await startEmbeddedPostgres({ dataDir: path.join(dataDir, 'pg'), port: await freePort(), persistent: false, durable, ...(module ? { module } : {}) })
  return {
    adminUrl: server.adminUrl,
    source: 'embedded',
    async stop() {
      await server.stop()
      rmSync(dataDir, { recursive: true, force: true })
    },
  }
}

async function tryTestcontainers(): Promise<TestServer | undefined> {
  const { getContainerRuntimeClient } = await import('testcontainers')
  try {
    await getContainerRuntimeClient()
  } catch {
    return undefined // no Docker here: fall back to the embedded server
  }
  const { PostgreSqlContainer } = await import('@testcontainers/postgresql')
  const container = await new PostgreSqlContainer('postgres:17-alpine').start()
  return { adminUrl: container.getConnectionUri(), source: 'testcontainers', stop: async () => void (await container.stop()) }
}

/** A run killed with SIGKILL cannot stop its server; the next run does, by the owner pid it left. */
async function sweepOrphanEmbeddedServers(): Promise<void> {
  for (const entry of readdirSync(tmpdir())) {
    if (!entry.startsWith(TMP_PREFIX)) continue
    const dir = path.join(tmpdir(), entry)
    let owner = NaN
    try {
      owner = Number(readFileSync(path.join(dir, 'owner.pid'), 'utf8'))
    } catch {}
    if (Number.isInteger(owner) && isAlive(owner)) continue
    await stopOrphanPostmaster(path.join(dir, 'pg'))
    rmSync(dir, { recursive: true, force: true })
  }
}

/** A port nothing listens on right now (for a server of our own). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer()
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number }
      srv.close(() => resolve(port))
    })
    srv.on('error', reject)
  })
}
