import { Kysely } from 'kysely'
import { afterAll, beforeAll, inject } from 'vitest'
import { createDb, type CreateDbOptions } from '../../src/connection/create-db.ts'
import { poolOf } from '../../src/connection/pipelined-pools.ts'
import { createScratchDatabase, dropScratchDatabase, scratchName } from '../../src/connection/scratch-database.ts'
import type { DB } from '../../src/db-types.ts'
import { buildLegacyDatabase } from '../../fixtures/legacy.ts'

export interface TestDatabase {
  name: string
  /** Superuser URL of this database. */
  url: string
  /** Superuser connection (set-up and inspection only: superusers bypass RLS). */
  admin: Kysely<any>
  /** Connections made by {@link connectAs}; closed with the database. */
  close(): Promise<void>
  /** A typed connection logged in as `user` (e.g. the application role). */
  connectAs(user: string, password?: string, max?: number, options?: CreateDbOptions): Kysely<DB>
}

/** A fresh database for this test file: a clone of the migrated template, or empty. */
export async function createTestDatabase(kind: 'migrated' | 'empty' = 'migrated'): Promise<TestDatabase> {
  const adminUrl = inject('adminUrl')
  const name = scratchName(`${inject('runId')}_t`)
  const url = await createScratchDatabase(adminUrl, name, kind === 'migrated' ? inject('template') : undefined)
  const admin = createDb<any>(url, { max: 4 })
  const others: Kysely<any>[] = []
  return {
    name,
    url,
    admin,
    connectAs(user, password = 'test', max = 4, options = {}) {
      const u = new URL(url)
      u.username = user
      u.password = password
      const db = createDb<DB>(u.toString(), { ...options, max })
      others.push(db)
      return db
    },
    async close() {
      await Promise.all([admin, ...others].map((d) => d.destroy().catch(() => {})))
      await dropScratchDatabase(adminUrl, name)
    },
  }
}

/** {@link createTestDatabase} for the whole file, dropped after its last test. */
export function useTestDatabase(kind: 'migrated' | 'empty' = 'migrated'): TestDatabase {
  const handle = {} as TestDatabase
  beforeAll(async () => Object.assign(handle, await createTestDatabase(kind)))
  afterAll(async () => handle.close?.())
  return handle
}


/**
 * Legacy (single-tenant, Drizzle-made) databases made on demand by a test file, each with a few
 * rows, all dropped after the file's last test.
 */
export function useLegacyDatabases(): () => Promise<TestDatabase> {
  const made: TestDatabase[] = []
  afterAll(async () => Promise.all(made.map((d) => d.close())))
  return async () => {
    const t = await createTestDatabase('empty')
    made.push(t)
    await buildLegacyDatabase(t.admin)
    return t
  }
}

/**
 * Runs `fn` on a superuser connection of `url` that is closed when it returns. No superuser session
 * may stay connected while a tenant is created (0005's guard against an unconfined single-tenant
 * app), which a TestDatabase's admin pool would be.
 */
export async function asSuperuser<T>(url: string, fn: (db: Kysely<any>) => Promise<T>): Promise<T> {
  const db = createDb<any>(url, { max: 1 })
  // Closed means the server's backend has gone, not only the pool: pg's pool.end() resolves before
  // its clients' sockets close, and until then the backend still shows in pg_stat_activity, where
  // the next createTenant's guard saw it (a newcomer had 3 runs of 6 fail so on a loaded machine).
  // The server closes its socket after it has left pg_stat_activity (proc_exit: shmem_exit first).
  const gone: Promise<void>[] = []
  poolOf(db)!.pool.on('connect', (client) => {
    const stream = (client as unknown as { connection: { stream: import('node:net').Socket } }).connection.stream
    gone.push(new Promise((resolve) => (stream.destroyed ? resolve() : stream.once('close', () => resolve()))))
  })
  try {
    return await fn(db)
  } finally {
    await db.destroy()
    await Promise.all(gone)
  }
}
