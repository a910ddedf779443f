import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { dropScratchDatabase } from '../../src/connection/scratch-database.ts'
import { MIGRATION_NAMES, OPEN_MIGRATION_NAMES } from '../support/migration-names.ts'
import type { KillPoint } from './kill-point.ts'
import { adminDb, appliedMigrations, buildProductionCopy, cloneOf, cutAt, migratedState, runMigrateCli, type MigratedState } from './support.ts'

/**
 * Where to pull the plug in the open phase (0014): while the single-tenant app's global key on
 * usage_events is built again in the internal collation, between it and the primary key's swap,
 * while columns lose their statistics, and while the owner's policies move to the migrator's secret.
 */
const TRIALS: { label: string; point: KillPoint }[] = [
  { label: 'building a global key in the internal collation', point: { after: /no statistics on users/, during: /unique index concurrently "usage_events_id_any_tenant"/ } },
  { label: 'building the primary key that replaces it', point: { after: /no statistics on users/, during: /unique index concurrently "usage_events_pkey_next"/ } },
  { label: 'taking statistics away', point: { at: /no statistics on skills \(/ } },
  { label: 'dropping the global lookups', point: { at: /remove index skills_slug_idx/ } },
  { label: 'moving the owner\'s view to the migrator\'s secret', point: { at: /owner_all_tenants on ratings/ } },
]

describe('the open phase killed with SIGKILL mid-run, then run again', () => {
  let base: string
  let reference: MigratedState
  const dbs: string[] = []
  beforeAll(async () => {
    base = await buildProductionCopy(0.05)
    dbs.push(base)
    const clone = await cloneOf(base)
    dbs.push(clone.name)
    expect((await runMigrateCli(clone.url, ['latest'])).code).toBe(0)
    const open = await runMigrateCli(clone.url, ['open', '--force'])
    expect(open.code, open.stderr).toBe(0)
    const db = adminDb(clone.url)
    reference = await migratedState(db)
    await db.destroy()
  })
  afterAll(async () => {
    for (const name of dbs) await dropScratchDatabase(inject('adminUrl'), name)
  })

  it.for(TRIALS.map((t) => [t.label, t] as const))('%s: the rerun completes, same schema, every row', async ([, trial], ctx) => {
    const landed = await cutAt(base, ['open', '--force'], trial.point, async (_db, url) => {
      expect((await runMigrateCli(url, ['latest'])).code).toBe(0)
    })
    if (!landed.ok) {
      console.log(`${trial.label}: not run: ${landed.why}`)
      return ctx.skip(`not run: ${landed.why}`)
    }
    console.log(`${trial.label}: ${landed.where}`)
    const { db, url } = landed
    try {
      expect(await appliedMigrations(db), `the kill landed in the open phase (${landed.where})`).toEqual([...MIGRATION_NAMES].sort())
      const rerun = await runMigrateCli(url, ['open', '--force'])
      expect(rerun.code, rerun.stdout + rerun.stderr).toBe(0)
      expect(await migratedState(db)).toEqual(reference)
      expect(await appliedMigrations(db)).toEqual([...MIGRATION_NAMES, ...OPEN_MIGRATION_NAMES].sort())
    } finally {
      await landed.drop()
    }
  })
})
