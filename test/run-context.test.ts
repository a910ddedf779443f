import { sql } from 'kysely'
import { describe, expect, inject, it } from 'vitest'
import { migrateDown, migrateToLatest } from '../src/migrator/migrate.ts'
import { inRun, progress, run } from '../src/online/run-context.ts'
import { useLegacyDatabases } from './support/database.ts'
import { MIGRATION_NAMES } from './support/migration-names.ts'
import { NOT_THE_OLD_APP } from './support/tenants.ts'

describe('one run context per run', () => {
  const legacyDb = useLegacyDatabases()

  it('nests and stays with its own async work, however it interleaves', async () => {
    expect(run().batchSize).toBe(5_000)
    const seen: string[] = []
    const logger = (name: string) => ({ info: (m: string) => seen.push(`${name}: ${m}`) })
    await Promise.all(['a', 'b'].map((name, i) => inRun({ logger: logger(name), batchSize: i + 1 }, async () => {
      for (let step = 0; step < 3; step++) {
        await new Promise((resolve) => setTimeout(resolve, 5 + 7 * i))
        progress(`${name}${step} batch ${run().batchSize}`)
        await inRun({ migration: `${name}-inner` }, async () => {
          await Promise.resolve()
          expect(run()).toMatchObject({ migration: `${name}-inner`, batchSize: i + 1 })
        })
        expect(run().migration).toBeUndefined()
      }
    })))
    expect(seen.filter((l) => l.startsWith('a: '))).toEqual(['a: a0 batch 1', 'a: a1 batch 1', 'a: a2 batch 1'])
    expect(seen.filter((l) => l.startsWith('b: '))).toEqual(['b: b0 batch 2', 'b: b1 batch 2', 'b: b2 batch 2'])
    expect(run().logger.info).toBeTypeOf('function')
  })

  it('two migrations at once in one process: each run\'s logger, roles and guards are its own', async () => {
    const [x, y] = await Promise.all([legacyDb(), legacyDb()])
    const roles = [`${inject('runId')}_rcx`, `${inject('runId')}_rcy`]
    const logs: string[][] = [[], []]
    try {
      const started: number[] = []
      const ended: number[] = []
      const outcomes = await Promise.all([x, y].map(async (d, i) => {
        started[i] = Date.now()
        const outcome = await migrateToLatest(d.admin, { appRole: inject('appRole'), oldAppRoles: [roles[i]!], logger: { info: (m) => logs[i]!.push(m) } })
        ended[i] = Date.now()
        return outcome
      }))
      expect(outcomes.map((o) => o.status)).toEqual(['applied', 'applied'])
      // They ran at the same time.
      expect(started[1]!).toBeLessThan(ended[0]!)
      expect(started[0]!).toBeLessThan(ended[1]!)
      for (const i of [0, 1]) {
        const mine = logs[i]!
        // Every migration reported, in order, to this run's logger only, with the progress of its steps.
        expect(mine.filter((m) => / done in \d+ ms$/.test(m)).map((m) => m.split(/ +/)[1])).toEqual(MIGRATION_NAMES.filter((n) => n !== '0001_baseline'))
        expect(mine.some((m) => /^  users\.tenant_id \(\d+ ms\)$/.test(m))).toBe(true)
        expect(mine.some((m) => m.includes(`old app roles, confined to the default tenant: `) && m.includes(roles[i]!))).toBe(true)
        expect(mine.some((m) => m.includes(roles[1 - i]!))).toBe(false)
      }
      // Each database gave its old-app role, and only that one, the old app's privileges.
      for (const [i, d] of [x, y].entries()) {
        const { rows } = await sql<{ role: string }>`select distinct grantee::text as role from information_schema.role_table_grants
          where table_name = 'skills' and grantee = any(${roles})`.execute(d.admin)
        expect(rows.map((r) => r.role)).toEqual([roles[i]])
      }
      // One run may drop data, the other may not, at the same time. (A second tenant waits for the open
      // phase since 0013: back before it, as a database whose tenants came before that version.)
      for (const d of [x, y]) {
        expect(await migrateDown(d.admin, { to: '0012_app_role_limits' })).toMatchObject({ status: 'applied' })
        await sql.raw(`${NOT_THE_OLD_APP} insert into tenants (id, name, slug) values ('t2', 'Other', 'other')`).execute(d.admin)
      }
      const downs = await Promise.all([x, y].map((d, i) => migrateDown(d.admin, { to: '0001_baseline', allowDataLoss: i === 0 })))
      expect(downs[0]).toMatchObject({ status: 'applied' })
      expect(downs[1]).toMatchObject({ status: 'error', error: { kind: 'data-loss' } })
    } finally {
      for (const d of [x, y]) for (const r of roles) await sql.raw(`drop owned by "${r}"`).execute(d.admin).catch(() => {})
      for (const r of roles) await sql.raw(`drop role if exists "${r}"`).execute(x.admin)
    }
  })
})
