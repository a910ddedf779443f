import { sql } from 'kysely'
import { beforeAll, describe, expect, inject, it } from 'vitest'
import { takeSchemaSnapshot } from '../src/catalog/schema-snapshot.ts'
import { citusReadiness } from '../src/citus/readiness.ts'
import { distribute, DistributeRefused, distributionOrder } from '../src/citus/distribute.ts'
import { runScript } from './support/cli.ts'
import { useTestDatabase } from './support/database.ts'
import { TENANT_TABLES } from '../fixtures/legacy.ts'
import { migrateContract } from '../src/migrator/migrate.ts'
import { CLEARED_BY } from '../src/citus/references-during-distribute.ts'
import { seedTwoTenants } from './support/tenants.ts'

// On a real Citus cluster: test/citus-coordinator.test.ts and test/citus-workers.test.ts.
describe('distribute without Citus', () => {
  const t = useTestDatabase('migrated')

  it('refuses in one line and changes nothing, from the API and from the CLI', async () => {
    const before = await takeSchemaSnapshot(t.admin)
    await expect(distribute(t.admin)).rejects.toThrow(new DistributeRefused('this database has no citus extension, and distribute needs Citus (12 or later): nothing was changed; see the README, "Scale-out on Citus"'))
    const cli = await runScript(['distribute'], { DATABASE_URL: t.url })
    expect(cli.code).toBe(1)
    expect(cli.stderr.trim().split('\n')).toEqual(['error: this database has no citus extension, and distribute needs Citus (12 or later): nothing was changed; see the README, "Scale-out on Citus"'])
    expect(await takeSchemaSnapshot(t.admin)).toEqual(before)
  })

  it('check --citus names what the expand schema breaks, and exits 1', async () => {
    const cli = await runScript(['check', '--citus'], { DATABASE_URL: t.url })
    expect(cli.code).toBe(1)
    // Opened to more tenants (the template is): the single-tenant app's global keys, in the internal collation.
    expect(cli.stdout).toMatch(/^  keys include tenant_id: users\.users_id_any_tenant: a unique index .* does not include tenant_id$/m)
    expect(cli.stdout).toMatch(/^  no SET NULL \/ SET DEFAULT with the distribution key: skills\.skills_author_id_tenant_fk: ON DELETE SET NULL/m)
    expect(cli.stderr).toMatch(/^error: \d+ thing\(s\) Citus would refuse \(listed above\); the contract phase \(skills-db contract\) removes those/m)
    expect((await citusReadiness(t.admin)).length).toBeGreaterThan(10)
  })
})

describe('the order distribute takes the tables in, on the contracted schema', () => {
  const t = useTestDatabase('migrated')
  beforeAll(async () => {
    await sql.raw(`alter database "${t.name}" owner to "${inject('ownerRole')}"`).execute(t.admin)
    await seedTwoTenants(t.admin)
    const outcome = await migrateContract(t.connectAs(inject('ownerRole'), 'test', 1), { appRole: inject('appRole'), allowOldAppSessions: true })
    expect(outcome.status === 'error' ? outcome.error.message : outcome.status).toBe('applied')
  })

  // A trigger runs on its table's shard once that is distributed, where a table it touches must be
  // distributed too: audit_logs' actor check reads users (distributed after it, the app's audit
  // appends failed), and the clearing triggers of skills and users write to their children.
  it('distributes every table the check sees as a tenant table, each after the tables its triggers touch', async () => {
    const order = await distributionOrder(t.admin)
    expect([...order].sort()).toEqual([...TENANT_TABLES, 'audit_logs', 'audit_signatures'].sort())
    const touches: [string, string][] = [['skills', 'usage_events'], ['users', 'skills'], ['users', 'usage_events'], ['users', 'skill_versions'],
      ['users', 'skill_reviews'], ['audit_logs', 'users']]
    for (const [table, touched] of touches) expect(order.indexOf(touched), `${touched} before ${table}`).toBeLessThan(order.indexOf(table))
  })

  // While distribute runs, the clearing triggers are off and a sweep clears what they would have:
  // from this list, which must say what the triggers do.
  it('CLEARED_BY names exactly the references each clearing trigger sets to null', async () => {
    const { rows } = await sql<{ fn: string; body: string }>`select p.pronamespace::regnamespace || '.' || p.proname as fn, p.prosrc as body from pg_proc p
      where p.oid in (select tgfoid from pg_trigger where not tgisinternal) and p.proname like '%clear_references' order by 1`.execute(t.admin)
    const read = Object.fromEntries(rows.map((r) => [r.fn, [...r.body.matchAll(/update public\.(\w+) set (\w+) = null where tenant_id = old\.tenant_id and \2 = old\.id;/g)]
      .map((m) => ({ table: m[1], column: m[2] }))]))
    expect(Object.keys(read).sort()).toEqual(Object.keys(CLEARED_BY).sort())
    for (const [fn, { references }] of Object.entries(CLEARED_BY)) expect(read[fn], fn).toEqual(references)
  })
})
