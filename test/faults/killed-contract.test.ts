import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { citusReadiness } from '../../src/citus/readiness.ts'
import { dropScratchDatabase } from '../../src/connection/scratch-database.ts'
import { ALL_MIGRATION_NAMES } from '../support/migration-names.ts'
import { adminDb, buildProductionCopy, cloneOf, migratedState, runMigrateCli, type MigratedState } from './support.ts'

/** Where to pull the plug in the contract phase: its key swaps, its references, the timestamp change around an index. */
const TRIALS: { label: string; marker: RegExp; delayMs: number }[] = [
  { label: 'at its start', marker: /up +0010_contract_tenant_keys …/, delayMs: 0 },
  { label: 'swapping primary keys', marker: /primary key skills \(tenant_id, id\)/, delayMs: 0 },
  { label: 'building a tenant-inclusive unique key', marker: /remove unique ratings_skill_id_user_id_unique/, delayMs: 0 },
  { label: 'between a new reference and the old one\'s removal', marker: /usage_events\.usage_events_user_id_fk \(/, delayMs: 0 },
  { label: 'taking the lane away', marker: /remove policy old_app_default_tenant on ratings/, delayMs: 0 },
  { label: 'around usage_events\' timestamp change', marker: /remove index usage_events_created_at_idx/, delayMs: 2 },
]

describe('the contract phase killed with SIGKILL mid-run, then run again', () => {
  let base: string
  let reference: MigratedState
  const dbs: string[] = []
  let killed = 0
  beforeAll(async () => {
    base = await buildProductionCopy(0.05)
    dbs.push(base)
    const clone = await cloneOf(base)
    dbs.push(clone.name)
    expect((await runMigrateCli(clone.url, ['latest'])).code).toBe(0)
    const contract = await runMigrateCli(clone.url, ['contract', '--force'])
    expect(contract.code, contract.stderr).toBe(0)
    const db = adminDb(clone.url)
    reference = await migratedState(db)
    await db.destroy()
  })
  afterAll(async () => {
    for (const name of dbs) await dropScratchDatabase(inject('adminUrl'), name)
    console.log(`${killed} of ${TRIALS.length} contract runs were killed mid-run`)
    expect(killed).toBeGreaterThanOrEqual(4)
  })

  it.each(TRIALS.map((t) => [t.label, t] as const))('%s: the rerun completes, same schema, every row, ready for Citus', async (_label, trial) => {
    const clone = await cloneOf(base)
    dbs.push(clone.name)
    const db = adminDb(clone.url)
    try {
      expect((await runMigrateCli(clone.url, ['latest'])).code).toBe(0)
      const cut = await runMigrateCli(clone.url, ['contract', '--force'], { marker: trial.marker, delayMs: trial.delayMs })
      if (cut.signal === 'SIGKILL') killed++
      const rerun = await runMigrateCli(clone.url, ['contract', '--force'])
      expect(rerun.code, rerun.stdout + rerun.stderr).toBe(0)
      expect(await migratedState(db)).toEqual(reference)
      expect(await citusReadiness(db)).toEqual([])
      const { rows } = await sql<{ n: number }>`select count(*)::int as n from skills_db.kysely_migration`.execute(db)
      expect(rows[0]!.n).toBe(ALL_MIGRATION_NAMES.length)
    } finally {
      await db.destroy()
    }
  })
})
