import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { citusReadiness } from '../../src/citus/readiness.ts'
import { dropScratchDatabase } from '../../src/connection/scratch-database.ts'
import { ALL_MIGRATION_NAMES, MIGRATION_NAMES } from '../support/migration-names.ts'
import type { KillPoint } from './kill-point.ts'
import { adminDb, appliedMigrations, buildProductionCopy, cloneOf, cutAt, migratedState, runMigrateCli, type MigratedState } from './support.ts'

/**
 * Where to pull the plug in the contract phase: its key swaps, its references, the timestamp
 * change around an index; between steps (`at` a progress line) or during a build (`during` it:
 * usage_events' index on created_at, built again once the column is timestamptz).
 */
const TRIALS: { label: string; point: KillPoint }[] = [
  { label: 'at its start', point: { at: /up +0010_contract_tenant_keys …/ } },
  { label: 'swapping primary keys', point: { at: /primary key skills \(tenant_id, id\)/ } },
  { label: 'building a tenant-inclusive unique key', point: { after: /remove unique ratings_skill_id_user_id_unique/, during: /unique index concurrently "skill_versions_tenant_skill_version_unique"/ } },
  { label: 'between a new reference and the old one\'s removal', point: { at: /usage_events\.usage_events_user_id_fk \(/ } },
  { label: 'taking the lane away', point: { at: /remove policy old_app_default_tenant on ratings/ } },
  { label: 'around usage_events\' timestamp change', point: { after: /remove index usage_events_created_at_idx/, during: /create index concurrently "usage_events_tenant_created_at_idx"/ } },
]

describe('the contract phase killed with SIGKILL mid-run, then run again', () => {
  let base: string
  let reference: MigratedState
  const dbs: string[] = []
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
  })

  it.for(TRIALS.map((t) => [t.label, t] as const))('%s: the rerun completes, same schema, every row, ready for Citus', async ([, trial], ctx) => {
    const landed = await cutAt(base, ['contract', '--force'], trial.point, async (_db, url) => {
      expect((await runMigrateCli(url, ['latest'])).code).toBe(0)
    })
    if (!landed.ok) {
      console.log(`${trial.label}: not run: ${landed.why}`)
      return ctx.skip(`not run: ${landed.why}`)
    }
    console.log(`${trial.label}: ${landed.where}`)
    const { db, url } = landed
    try {
      expect(await appliedMigrations(db), `the kill landed in the contract phase (${landed.where})`).toEqual([...MIGRATION_NAMES].sort())
      const rerun = await runMigrateCli(url, ['contract', '--force'])
      expect(rerun.code, rerun.stdout + rerun.stderr).toBe(0)
      expect(await migratedState(db)).toEqual(reference)
      expect(await citusReadiness(db)).toEqual([])
      expect(await appliedMigrations(db)).toEqual(ALL_MIGRATION_NAMES)
    } finally {
      await landed.drop()
    }
  })
})
