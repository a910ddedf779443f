import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { dropScratchDatabase } from '../../src/connection/scratch-database.ts'
import { TENANT_TABLES } from '../../fixtures/legacy.ts'
import { MIGRATION_NAMES } from '../support/migration-names.ts'
import { adminDb, buildProductionCopy, cloneOf, migratedState, runMigrateCli, type MigratedState } from './support.ts'

/** Where to pull the plug: right after a progress line, so every migration and its slow steps are hit. */
const TRIALS: { label: string; marker: RegExp; delayMs: number; nulls?: boolean }[] = [
  { label: 'in 0002', marker: /up +0002_add_tenants …/, delayMs: 0 },
  { label: 'at the start of 0003', marker: /up +0003_add_tenant_id_columns …/, delayMs: 0 },
  { label: 'between 0003\'s columns', marker: /ratings\.tenant_id \(/, delayMs: 0 },
  { label: 'in 0004', marker: /up +0004_backfill_tenant_id …/, delayMs: 0 },
  { label: 'inside the backfill', marker: /backfilled \d+ rows so far/, delayMs: 0, nulls: true },
  { label: 'later inside the backfill', marker: /usage_events: backfilled \d+ rows so far/, delayMs: 40, nulls: true },
  { label: 'during NOT NULL validation', marker: /up +0005_enforce_tenant_id …/, delayMs: 15 },
  { label: 'during FK validation', marker: /skill_versions\.tenant_id not null/, delayMs: 0 },
  { label: 'during a concurrent unique build', marker: /unique users_tenant_id_id_unique/, delayMs: 0 },
  { label: 'while swapping a composite FK', marker: /ratings\.ratings_skill_id_tenant_fk/, delayMs: 0 },
  { label: 'during CONCURRENTLY on skills', marker: /index skills_slug_idx/, delayMs: 2 },
  { label: 'during CONCURRENTLY on usage_events', marker: /primary key site_settings/, delayMs: 5 },
  { label: 'while enabling row security', marker: /row security on skills/, delayMs: 0 },
  { label: 'in 0006', marker: /up +0006_create_audit_logs …/, delayMs: 0 },
  { label: 'in 0007', marker: /up +0007_private_tenants_and_audit …/, delayMs: 0 },
  { label: 'between 0008\'s policies', marker: /tenant_isolation on skills: the entered tenant/, delayMs: 0 },
  { label: 'during 0008\'s ANALYZE', marker: /own_tenant on tenants: the entered tenant/, delayMs: 0 },
  { label: 'between 0009\'s statistics steps', marker: /no statistics on skills's content/, delayMs: 0 },
]

describe('killed with SIGKILL mid-run, then run again', () => {
  let base: string
  let reference: MigratedState
  const dbs: string[] = []
  let killed = 0
  let invalidRebuilt = 0
  beforeAll(async () => {
    base = await buildProductionCopy(0.05) // 50k usage_events
    dbs.push(base)
    const clone = await cloneOf(base)
    dbs.push(clone.name)
    const run = await runMigrateCli(clone.url, ['latest'])
    expect(run.code, run.stderr).toBe(0)
    const db = adminDb(clone.url)
    reference = await migratedState(db)
    await db.destroy()
  })
  afterAll(async () => {
    for (const name of dbs) await dropScratchDatabase(inject('adminUrl'), name)
    // (A killed client does not stop a CONCURRENTLY build on the server: it finishes, so INVALID
    // indexes come from a terminated backend instead — see concurrency.test.ts.)
    console.log(`${killed} of ${TRIALS.length} runs were killed mid-run; ${invalidRebuilt} reruns dropped and rebuilt an INVALID index`)
    // At least 10 of the trials must really have been cut short, or this suite proves nothing.
    expect(killed).toBeGreaterThanOrEqual(10)
  })

  it.each(TRIALS.map((t) => [t.label, t] as const))('%s: completes, same schema, every row, no leftovers', async (_label, trial) => {
    const clone = await cloneOf(base)
    dbs.push(clone.name)
    const db = adminDb(clone.url)
    try {
      if (trial.nulls) {
        // A database where tenant_id exists but rows lack it (as after the plan's own 0003).
        for (let i = 0; i < 2; i++) expect((await runMigrateCli(clone.url, ['up'])).code).toBe(0)
        await sql`update usage_events set tenant_id = null`.execute(db)
        await sql`update ratings set tenant_id = null`.execute(db)
      }
      const cut = await runMigrateCli(clone.url, ['latest', '--batch-size', '2000'], { marker: trial.marker, delayMs: trial.delayMs })
      if (cut.signal === 'SIGKILL') killed++

      const rerun = await runMigrateCli(clone.url, ['latest'])
      expect(rerun.code, rerun.stdout + rerun.stderr).toBe(0)
      if (/dropping INVALID index/.test(rerun.stdout)) invalidRebuilt++
      expect(await migratedState(db)).toEqual(reference) // no INVALID index, no leftover CHECK, every row
      for (const table of TENANT_TABLES) {
        const { rows } = await sql<{ n: number }>`select count(*)::int as n from ${sql.table(table)} where tenant_id is distinct from (select id from tenants where slug = 'default')`.execute(db)
        expect(rows[0]!.n, table).toBe(0)
      }
      const { rows: locks } = await sql<{ n: number }>`
        select count(*)::int as n from pg_locks where locktype = 'advisory' and database = (select oid from pg_database where datname = current_database())`.execute(db)
      expect(locks[0]!.n).toBe(0)
      const { rows: migrations } = await sql<{ n: number }>`select count(*)::int as n from skills_db.kysely_migration`.execute(db)
      expect(migrations[0]!.n).toBe(MIGRATION_NAMES.length)
    } finally {
      await db.destroy()
    }
  })
})
