import { now } from '../../fixtures/clock.ts'
import { createDb } from '../../src/connection/create-db.ts'
import { migrateOpen, migrateToLatest } from '../../src/migrator/migrate.ts'
import { PLAN_STEPS } from './plan-sql.ts'
import { BENCH_TENANT_KEY } from './rls-overhead.ts'
import { connectClient } from '../../src/connection/pg-client.ts'

export interface MigrationRun {
  ok: boolean
  error?: string
  /** clock.ts times of each step's start, and its duration */
  steps: { name: string; start: number; ms: number }[]
}

/**
 * (a) skills-db: migrateToLatest, the way the app or the CLI runs it; with `open`, the open phase
 * (skills-db open) instead, expand included. The bench's own superuser sessions are no old app.
 */
export async function runSkillsDb(url: string, appRole: string, { open = false } = {}): Promise<MigrationRun> {
  const db = createDb<any>(url, { max: 1, applicationName: 'skills-db migrator' })
  try {
    const options = { appRole, tenantKeys: [BENCH_TENANT_KEY] }
    const outcome = open ? await migrateOpen(db, { ...options, allowOldAppSessions: true }) : await migrateToLatest(db, options)
    // Each step's start on the bench's clock: as long before now as its wall-clock start.
    const steps = outcome.steps.map((s) => ({ name: s.name, start: now() - (Date.now() - s.startedAt.getTime()), ms: s.durationMs }))
    return outcome.status === 'error' ? { ok: false, error: `${outcome.error.migration}: ${outcome.error.message}`, steps } : { ok: true, steps }
  } finally {
    await db.destroy()
  }
}

/**
 * (b) the plan's way: its five files as plain SQL, in one transaction, as the plan describes.
 * Bench code modelled on the plan, not the product.
 */
export async function runPlan(url: string, { forced = false } = {}): Promise<MigrationRun> {
  const client = await connectClient({ connectionString: url, application_name: 'plan migration' })
  const steps: MigrationRun['steps'] = []
  try {
    await client.query('begin')
    if (forced) {
      // "Forced through": take every table's lock up front, in one order, so the app cannot deadlock it.
      const start = now()
      steps.push({ name: 'lock all tables', start, ms: NaN })
      // All at once or none: a lock wait longer than 100 ms gives up (to a savepoint) and tries again.
      await client.query(`set local lock_timeout = '100ms'`)
      for (;;) {
        await client.query('savepoint lock_all')
        try {
          await client.query('lock table users, skills, ratings, usage_events, skill_versions, skill_embeddings, skill_reviews, api_keys, site_settings in access exclusive mode')
          break
        } catch {
          await client.query('rollback to savepoint lock_all')
        }
      }
      await client.query(`set local lock_timeout = 0`)
      steps.at(-1)!.ms = now() - start
    }
    for (const step of PLAN_STEPS) {
      const start = now()
      steps.push({ name: step.name, start, ms: NaN })
      await client.query(step.sql)
      steps.at(-1)!.ms = now() - start
    }
    await client.query('commit')
    return { ok: true, steps }
  } catch (error) {
    await client.query('rollback').catch(() => {})
    return { ok: false, error: (error as Error).message, steps }
  } finally {
    await client.end().catch(() => {})
  }
}
