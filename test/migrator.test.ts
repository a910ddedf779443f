import { mkdtempSync, readdirSync, readFileSync, cpSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { sql } from 'kysely'
import { afterAll, describe, expect, it } from 'vitest'
import { makeMigration } from '../src/migrator/make-migration.ts'
import { migrateDown, migrateToLatest, migrateUp } from '../src/migrator/migrate.ts'
import { MIGRATIONS_DIR } from '../src/migrator/migration-provider.ts'
import { migrationStatus } from '../src/migrator/migration-status.ts'
import { createTestDatabase, type TestDatabase } from './support/database.ts'
import { runScript } from './support/cli.ts'
import { ALL_MIGRATION_NAMES, CONTRACT_MIGRATION_NAMES, GATED_MIGRATION_NAMES, MIGRATION_NAMES, OPEN_MIGRATION_NAMES } from './support/migration-names.ts'
import { migrateContract, migrateOpen } from '../src/migrator/migrate.ts'
import { inject } from 'vitest'

const ALL = MIGRATION_NAMES
const appRole = inject('appRole')

describe('migrator', () => {
  const dbs: TestDatabase[] = []
  const fresh = async () => {
    const d = await createTestDatabase('empty')
    dbs.push(d)
    return d
  }
  const dirs: string[] = []
  afterAll(async () => {
    await Promise.all(dbs.map((d) => d.close()))
    for (const d of dirs) rmSync(d, { recursive: true, force: true })
  })

  it('a role name the run cannot use is a preflight refusal, and a tenant key that does not parse an invalid option: nothing changes', async () => {
    const t = await createTestDatabase('migrated')
    dbs.push(t)
    const recorded = (await sql<{ v: string }>`select value as v from skills_db.settings where key = 'app_role'`.execute(t.admin)).rows[0]!.v
    const applied = (await migrationStatus(t.admin)).applied
    expect(await migrateToLatest(t.admin, { appRole: 'someone_else' })).toMatchObject({
      status: 'error', error: { kind: 'preflight', message: `this database's application role is ${recorded}, not someone_else: ask for ${recorded} (or name none, and ${recorded} is used)` },
    })
    expect(await migrateToLatest(t.admin, { oldAppRoles: ['Not-Plain'] })).toMatchObject({ status: 'error', error: { kind: 'preflight', message: expect.stringMatching(/old app role name "Not-Plain" is not allowed/) } })
    expect(await migrateToLatest(t.admin, { tenantKeys: ['no-secret'] })).toMatchObject({ status: 'error', error: { kind: 'invalid-options' } })
    expect((await migrationStatus(t.admin)).applied).toEqual(applied)
  })

  it('up applies one migration, latest the rest, status tells applied and pending', async () => {
    const t = await fresh()
    const phases = Object.fromEntries(ALL_MIGRATION_NAMES.map((n) => [n, CONTRACT_MIGRATION_NAMES.includes(n) ? 'contract' : OPEN_MIGRATION_NAMES.includes(n) ? 'open' : 'expand']))
    expect(await migrationStatus(t.admin)).toEqual({ applied: [], pending: ALL_MIGRATION_NAMES, waiting: GATED_MIGRATION_NAMES, unknown: [], phase: 'expand', phases })
    expect(await migrateUp(t.admin, { appRole })).toMatchObject({ status: 'applied', steps: [{ name: ALL[0], direction: 'Up' }] })
    const mid = await migrationStatus(t.admin)
    expect(mid.applied.map((m) => m.name)).toEqual([ALL[0]])
    expect(Date.parse(mid.applied[0]!.appliedAt)).toBeGreaterThan(Date.now() - 60_000)
    expect(mid.pending).toEqual(ALL_MIGRATION_NAMES.slice(1))

    // latest applies the expand phase's migrations, later files included, and leaves the open and
    // contract phases, which wait for the operator.
    const latest = await migrateToLatest(t.admin, { appRole })
    expect(latest.steps.map((s) => s.name)).toEqual(ALL.slice(1))
    expect(latest).toMatchObject({ status: 'applied', waiting: GATED_MIGRATION_NAMES })
    expect(await migrateToLatest(t.admin, { appRole })).toEqual({ status: 'up-to-date', steps: [], adopted: false, waiting: GATED_MIGRATION_NAMES })
    expect(await migrateUp(t.admin, { appRole })).toEqual({ status: 'up-to-date', steps: [], adopted: false, waiting: GATED_MIGRATION_NAMES })
    expect(await migrationStatus(t.admin)).toMatchObject({ pending: GATED_MIGRATION_NAMES, waiting: GATED_MIGRATION_NAMES, phase: 'expand' })
    // open applies the open phase's; contract the rest. A database that reached a phase takes later
    // migrations of it with latest (status: nothing waits after the contract phase).
    expect(await migrateOpen(t.admin, { appRole })).toMatchObject({ status: 'applied', steps: OPEN_MIGRATION_NAMES.map((name) => ({ name })), waiting: CONTRACT_MIGRATION_NAMES })
    expect(await migrationStatus(t.admin)).toMatchObject({ pending: CONTRACT_MIGRATION_NAMES, waiting: CONTRACT_MIGRATION_NAMES, phase: 'open' })
    expect(await migrateContract(t.admin, { appRole, timestampsAreUtc: true })).toMatchObject({ status: 'applied', steps: CONTRACT_MIGRATION_NAMES.map((name) => ({ name })), waiting: [] })
    expect(await migrationStatus(t.admin)).toMatchObject({ pending: [], waiting: [], phase: 'contract' })
    // Rolled back in the order they were applied.
    expect(await migrateDown(t.admin, { to: MIGRATION_NAMES.at(-1)! })).toMatchObject({ status: 'applied', steps: [...OPEN_MIGRATION_NAMES, ...CONTRACT_MIGRATION_NAMES].reverse().map((name) => ({ name, direction: 'Down' })) })
  })

  it('down rolls back one step, to a named migration, or all; unknown names and empty histories are errors', async () => {
    const t = await fresh()
    await migrateToLatest(t.admin, { appRole })
    if (ALL.length > 1) {
      const one = await migrateDown(t.admin, { appRole })
      expect(one).toMatchObject({ status: 'applied', steps: [{ name: ALL.at(-1), direction: 'Down' }] })
      await migrateToLatest(t.admin, { appRole })
      const to = await migrateDown(t.admin, { to: ALL[0], appRole })
      expect(to.steps.map((s) => s.name)).toEqual(ALL.slice(1).reverse())
    }
    const unknown = await migrateDown(t.admin, { to: '0099_nope' })
    expect(unknown).toMatchObject({ status: 'error', error: { kind: 'unknown-migration', message: expect.stringMatching(/unknown migration "0099_nope"/) } })
    const all = await migrateDown(t.admin, { to: 'all' })
    expect(all.steps.map((s) => s.name)).toEqual([ALL[0]])
    expect((await migrationStatus(t.admin)).applied).toEqual([])
    expect(await migrateDown(t.admin)).toMatchObject({ status: 'error', steps: [], error: { kind: 'nothing-to-do', message: 'nothing to roll back: no migration is applied' } })
  })

  it('reports migrations the database has but the code does not', async () => {
    const t = await fresh()
    await migrateUp(t.admin, { appRole })
    await sql`insert into skills_db.kysely_migration (name, timestamp) values ('0999_from_the_future', ${new Date().toISOString()})`.execute(t.admin)
    const status = await migrationStatus(t.admin)
    expect(status.unknown.map((m) => m.name)).toEqual(['0999_from_the_future'])
    const outcome = await migrateToLatest(t.admin, { appRole })
    expect(outcome).toMatchObject({ status: 'error', error: { kind: 'unknown-migration', message: expect.stringMatching(/records migration 0999_from_the_future but this code does not have it/) } })
  })

  it('make creates the next numbered file and refuses bad or duplicate names', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'skills-db-make-'))
    dirs.push(dir)
    cpSync(MIGRATIONS_DIR, dir, { recursive: true })
    const file = makeMigration('add_skill_tags', dir)
    expect(path.basename(file)).toBe(`${String(ALL_MIGRATION_NAMES.length + 1).padStart(4, '0')}_add_skill_tags.ts`)
    expect(readFileSync(file, 'utf8')).toMatch(/export const up = \(db: Kysely<any>\) => applySteps\(db, steps\)/)
    expect(() => makeMigration('add_skill_tags', dir)).toThrow(/already exists/)
    for (const bad of ['', '../evil', 'a/b', 'Has Space']) expect(() => makeMigration(bad, dir)).toThrow(/is not allowed/)
  })

  it('make refuses a folder of compiled migrations (an installed copy of skills-db)', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'skills-db-make-'))
    dirs.push(dir)
    writeFileSync(path.join(dir, '0001_baseline.js'), '')
    writeFileSync(path.join(dir, '0001_baseline.d.ts'), '')
    expect(() => makeMigration('add_skill_tags', dir)).toThrow(/make writes a migration into skills-db's own source \(src\/migrations\).*run it in a checkout of skills-db/)
    expect(readdirSync(dir)).toEqual(['0001_baseline.d.ts', '0001_baseline.js'])
  })

  it('several app instances booting at once: each migration applied exactly once, all succeed', async () => {
    const t = await fresh()
    const runs = await Promise.all(
      Array.from({ length: 4 }, () => runScript([], { DATABASE_URL: t.url, APP_ROLE: appRole }, { script: 'test/support/boot-migrate.ts' })),
    )
    const outcomes = runs.map((r) => {
      expect(r.code, r.stderr).toBe(0)
      return JSON.parse(r.stdout.trim().split('\n').at(-1)!)
    })
    expect(outcomes.filter((o) => o.status === 'applied')).toHaveLength(1)
    expect(outcomes.filter((o) => o.status === 'up-to-date')).toHaveLength(3)
    const applied = outcomes.flatMap((o) => o.steps.map((s: { name: string }) => s.name)).sort()
    expect(applied).toEqual(ALL)
    const { rows } = await sql<{ name: string; n: number }>`select name, count(*)::int as n from skills_db.kysely_migration group by name order by name`.execute(t.admin)
    expect(rows).toEqual(ALL.map((name) => ({ name, n: 1 })))
  })
})
