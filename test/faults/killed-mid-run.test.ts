import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { dropScratchDatabase } from '../../src/connection/scratch-database.ts'
import { TENANT_TABLES } from '../../fixtures/legacy.ts'
import { MIGRATION_NAMES } from '../support/migration-names.ts'
import type { KillPoint } from './kill-point.ts'
import { adminDb, appliedMigrations, buildProductionCopy, cloneOf, cutAt, migratedState, runMigrateCli, type MigratedState } from './support.ts'

/**
 * Where to pull the plug: every migration, between steps (`at` a progress line: the CLI stops
 * itself there) and during its slow statements (`during` one, seen running on the server). `in`
 * is the migration the kill must land in: it is not recorded after the cut, the one before it is.
 */
const TRIALS: { label: string; in: string; point: KillPoint; nulls?: boolean }[] = [
  { label: 'in 0002', in: '0002_add_tenants', point: { at: /up +0002_add_tenants …/ } },
  { label: 'at the start of 0003', in: '0003_add_tenant_id_columns', point: { at: /up +0003_add_tenant_id_columns …/ } },
  { label: 'between 0003\'s columns', in: '0003_add_tenant_id_columns', point: { at: /ratings\.tenant_id \(/ } },
  { label: 'in 0004', in: '0004_backfill_tenant_id', point: { at: /up +0004_backfill_tenant_id …/ } },
  { label: 'inside the backfill', in: '0004_backfill_tenant_id', point: { at: /backfilled \d+ rows so far/ }, nulls: true },
  { label: 'later inside the backfill', in: '0004_backfill_tenant_id', point: { at: /usage_events: backfilled [1-9]\d{4,} rows so far/ }, nulls: true },
  { label: 'during NOT NULL validation', in: '0005_enforce_tenant_id', point: { after: /up +0005_enforce_tenant_id …/, during: /validate constraint "\w+_tenant_id_not_null"/ } },
  { label: 'during FK validation', in: '0005_enforce_tenant_id', point: { after: /site_settings\.tenant_id not null/, during: /validate constraint "\w+_tenant_id_fk"/ } },
  { label: 'during a concurrent unique build', in: '0005_enforce_tenant_id', point: { after: /site_settings\.site_settings_tenant_id_fk/, during: /create unique index concurrently "\w+_tenant_id_id_unique"/ } },
  { label: 'while swapping a composite FK', in: '0005_enforce_tenant_id', point: { at: /ratings\.ratings_skill_id_tenant_fk \(/ } },
  { label: 'during CONCURRENTLY on skills', in: '0005_enforce_tenant_id', point: { after: /index skills_slug_idx/, during: /index concurrently "skills_tenant_slug_unique"/ } },
  { label: 'during CONCURRENTLY on usage_events', in: '0005_enforce_tenant_id', point: { after: /primary key site_settings/, during: /index concurrently "usage_events_tenant_created_at_idx"/ } },
  { label: 'while enabling row security', in: '0005_enforce_tenant_id', point: { at: /row security on skills \(/ } },
  { label: 'in 0006', in: '0006_create_audit_logs', point: { at: /up +0006_create_audit_logs …/ } },
  { label: 'in 0007', in: '0007_private_tenants_and_audit', point: { at: /up +0007_private_tenants_and_audit …/ } },
  { label: 'between 0008\'s policies', in: '0008_session_bound_tenant_context', point: { at: /tenant_isolation on skills: the entered tenant/ } },
  { label: 'during 0008\'s ANALYZE', in: '0008_session_bound_tenant_context', point: { after: /own_tenant on tenants: the entered tenant/, during: /^analyze / } },
  { label: 'between 0009\'s statistics steps', in: '0009_close_cross_tenant_oracles', point: { at: /no statistics on skills's content/ } },
]

describe('killed with SIGKILL mid-run, then run again', () => {
  let base: string
  let reference: MigratedState
  const dbs: string[] = []
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
    console.log(`${invalidRebuilt} reruns dropped and rebuilt an INVALID index`)
  })

  it.for(TRIALS.map((t) => [t.label, t] as const))('%s: completes, same schema, every row, no leftovers', async ([, trial], ctx) => {
    const landed = await cutAt(base, ['latest', '--batch-size', '2000'], trial.point, async (db, url) => {
      if (!trial.nulls) return
      // A database where tenant_id exists but rows lack it (as after the plan's own 0003).
      for (let i = 0; i < 2; i++) expect((await runMigrateCli(url, ['up'])).code).toBe(0)
      await sql`update usage_events set tenant_id = null`.execute(db)
      await sql`update ratings set tenant_id = null`.execute(db)
    })
    if (!landed.ok) {
      console.log(`${trial.label}: not run: ${landed.why}`)
      return ctx.skip(`not run: ${landed.why}`)
    }
    console.log(`${trial.label}: ${landed.where}`)
    const { db, url } = landed
    try {
      expect(await appliedMigrations(db), `the kill landed in ${trial.in} (${landed.where})`).toEqual(MIGRATION_NAMES.slice(0, MIGRATION_NAMES.indexOf(trial.in)))
      if (trial.nulls) {
        const { rows } = await sql<{ n: number }>`select (select count(*) from usage_events where tenant_id is null) + (select count(*) from ratings where tenant_id is null) as n`.execute(db)
        expect(Number(rows[0]!.n), 'rows the cut backfill left without a tenant').toBeGreaterThan(0)
      }

      const rerun = await runMigrateCli(url, ['latest'])
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
      expect(await appliedMigrations(db)).toEqual(MIGRATION_NAMES)
    } finally {
      await landed.drop()
    }
  })
})
