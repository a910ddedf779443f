import { MIGRATION_NAMES } from '../support/migration-names.ts'
import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { takeSchemaSnapshot, type SchemaSnapshot } from '../../src/catalog/schema-snapshot.ts'
import { createDb } from '../../src/connection/create-db.ts'
import { dropScratchDatabase } from '../../src/connection/scratch-database.ts'
import { migrateToLatest } from '../../src/migrator/migrate.ts'
import { runScript } from '../support/cli.ts'
import { createTestDatabase } from '../support/database.ts'
import { adminDb, buildProductionCopy, cloneOf } from './support.ts'
import { connectClient } from '../../src/connection/pg-client.ts'

const appRole = inject('appRole')

describe('many app instances, held locks, lost connections', () => {
  let base: string
  let reference: SchemaSnapshot
  const dbs: string[] = []
  beforeAll(async () => {
    base = await buildProductionCopy(0.02)
    dbs.push(base)
    const clone = await cloneOf(base)
    dbs.push(clone.name)
    const db = adminDb(clone.url)
    expect((await migrateToLatest(db, { appRole })).status).toBe('applied')
    reference = await takeSchemaSnapshot(db)
    await db.destroy()
  })
  afterAll(async () => {
    for (const name of dbs) await dropScratchDatabase(inject('adminUrl'), name)
  })

  /** A fresh copy in which an app transaction holds a row of skills (and so the table's ROW EXCLUSIVE lock). */
  async function copyWithSkillsLocked() {
    const clone = await cloneOf(base)
    dbs.push(clone.name)
    const holder = await connectClient({ connectionString: clone.url, application_name: 'long app transaction' })
    await holder.query('begin')
    await holder.query(`update skills set name = name where id = 's1'`)
    return { clone, holder }
  }

  it('8 processes call migrateToLatest() on one empty database: all succeed, each migration recorded once', async () => {
    const t = await createTestDatabase('empty')
    try {
      const runs = await Promise.all(Array.from({ length: 8 }, () => runScript([], { DATABASE_URL: t.url, APP_ROLE: appRole }, { script: 'test/support/boot-migrate.ts' })))
      const outcomes = runs.map((r) => (expect(r.code, r.stderr).toBe(0), JSON.parse(r.stdout.trim().split('\n').at(-1)!)))
      expect(outcomes.map((o) => o.status).sort()).toEqual(['applied', ...Array(7).fill('up-to-date')])
      const { rows } = await sql<{ n: number; names: number }>`select count(*)::int as n, count(distinct name)::int as names from skills_db.kysely_migration`.execute(t.admin)
      expect(rows[0]).toEqual({ n: MIGRATION_NAMES.length, names: MIGRATION_NAMES.length })
    } finally {
      await t.close()
    }
  })

  it('an app transaction holds skills for 20 s: other sessions are never queued behind the migration; it completes after', async () => {
    const { clone, holder } = await copyWithSkillsLocked()
    const released = new Promise<void>((resolve) => setTimeout(() => void holder.query('commit').then(() => holder.end()).then(resolve), 20_000))

    // The rest of the app keeps reading and writing skills (other rows) throughout.
    const others = createDb<any>(clone.url, { max: 2 })
    const latencies: number[] = []
    let running = true
    const app = (async () => {
      for (let i = 2; running; i++) {
        const start = performance.now()
        await sql`update skills set total_uses = total_uses + 1 where id = ${`s${2 + (i % 500)}`}`.execute(others)
        await sql`select * from skills where slug = ${`skill-${2 + (i % 500)}`}`.execute(others)
        latencies.push(performance.now() - start)
        await new Promise((r) => setTimeout(r, 10))
      }
    })()

    const db = adminDb(clone.url)
    const started = performance.now()
    const outcome = await migrateToLatest(db, { appRole, lockTimeoutMs: 50 })
    const tookMs = performance.now() - started
    running = false
    await app
    await released
    await others.destroy()
    try {
      expect(outcome.status, JSON.stringify(outcome)).toBe('applied')
      expect(tookMs).toBeGreaterThan(19_000) // it really waited for the holder
      expect(await takeSchemaSnapshot(db)).toEqual(reference)
      // Two statements per sample; each may wait at most one lock timeout (50 ms) behind a DDL
      // statement, plus scheduling noise on a shared machine.
      expect(Math.max(...latencies)).toBeLessThan(1_000)
      expect(latencies.length).toBeGreaterThan(200)
    } finally {
      await db.destroy()
    }
  })

  it('when the retry budget runs out first: stops naming the table and the session, and a rerun completes', async () => {
    const { clone, holder } = await copyWithSkillsLocked()
    const pid = (await holder.query('select pg_backend_pid() as pid')).rows[0].pid as number
    const db = adminDb(clone.url)
    try {
      const outcome = await migrateToLatest(db, { appRole, lockTimeoutMs: 50, lockRetryBudgetMs: 2_000 })
      expect(outcome).toMatchObject({
        status: 'error',
        error: { kind: 'lock-timeout', migration: '0003_add_tenant_id_columns', message: expect.stringMatching(new RegExp(`gave up waiting for a lock on table skills(?: \\(or a table it locks with it: [^)]*\\))?: held by pid ${pid} \\(long app transaction, idle in transaction, holds skills, .*rerun`)) },
      })
      await holder.query('commit')
      const rerun = await migrateToLatest(db, { appRole })
      expect(rerun.status).toBe('applied')
      expect(await takeSchemaSnapshot(db)).toEqual(reference)
    } finally {
      await holder.end().catch(() => {})
      await db.destroy()
    }
  })

  it('the migrator\'s connection is terminated mid-migration: a clear error, and a rerun completes', async () => {
    const clone = await cloneOf(base)
    dbs.push(clone.name)
    const db = adminDb(clone.url)
    const watcher = adminDb(clone.url)
    // An open snapshot makes the first CONCURRENTLY build wait in its last phase, with its index
    // already in the catalog (INVALID): the moment to cut the connection.
    const snapshot = await connectClient({ connectionString: clone.url, application_name: 'reporting query' })
    await snapshot.query('begin isolation level repeatable read')
    await snapshot.query('select 1')
    try {
      let terminated = false
      const kill = (async () => {
        for (let i = 0; i < 3000 && !terminated; i++) {
          const { rows } = await sql<{ pid: number }>`select pid from pg_stat_activity
            where datname = current_database() and application_name = 'skills-db migrator' and state = 'active'
              and query ilike 'create unique index concurrently%' and wait_event_type = 'Lock'`.execute(watcher)
          if (rows[0]) {
            await sql`select pg_terminate_backend(${rows[0].pid})`.execute(watcher)
            terminated = true
          }
          await new Promise((r) => setTimeout(r, 10))
        }
        await snapshot.query('commit')
      })()
      const outcome = await migrateToLatest(db, { appRole })
      await kill
      expect(terminated).toBe(true)
      expect(outcome).toMatchObject({ status: 'error', error: { kind: 'connection', migration: '0005_enforce_tenant_id', message: expect.stringMatching(/^lost the connection to PostgreSQL during the migration .*; every step resumes where it stopped: run it again$/) } })
      // The driver's own error, kept.
      expect((outcome as { error: Error }).error.cause).toBeInstanceOf(Error)
      // The build was cut off server-side: it left an INVALID index, which the rerun drops and rebuilds.
      const invalid = await sql<{ n: number }>`select count(*)::int as n from pg_index where not indisvalid`.execute(watcher)
      expect(invalid.rows[0]!.n).toBe(1)
      const log: string[] = []
      const rerun = await migrateToLatest(db, { appRole, logger: { info: (m) => log.push(m) } })
      expect(rerun.status, JSON.stringify(rerun)).toBe('applied')
      expect(log.join('\n')).toMatch(/dropping INVALID index \S+ left by an interrupted build/)
      expect(await takeSchemaSnapshot(db)).toEqual(reference)
    } finally {
      await snapshot.end().catch(() => {})
      await Promise.all([db.destroy(), watcher.destroy()])
    }
  })
})
