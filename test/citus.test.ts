import { sql } from 'kysely'
import { beforeAll, describe, expect, inject, it } from 'vitest'
import { takeSchemaSnapshot } from '../src/catalog/schema-snapshot.ts'
import { citusReadiness } from '../src/citus/readiness.ts'
import { distribute, DistributeRefused, distributionOrder } from '../src/citus/distribute.ts'
import { runScript } from './support/cli.ts'
import { useTestDatabase } from './support/database.ts'
import { TENANT_TABLES } from '../fixtures/legacy.ts'
import { migrateContract } from '../src/migrator/migrate.ts'
import { CLEARED_BY, referencesBack } from '../src/citus/references-during-distribute.ts'
import { inRun } from '../src/online/run-context.ts'
import { createDb } from '../src/connection/create-db.ts'
import { A } from './support/tenants.ts'
import { seedTwoTenants } from './support/tenants.ts'

// On a real Citus cluster: test/citus-coordinator.test.ts and test/citus-workers.test.ts.
describe('distribute without Citus', () => {
  const t = useTestDatabase('migrated')

  it('refuses in one line and changes nothing, from the API and from the CLI', async () => {
    const before = await takeSchemaSnapshot(t.admin)
    await expect(distribute(t.admin)).rejects.toThrow(new DistributeRefused('this database has no citus extension, and distribute needs Citus (12 or later): nothing was changed; see docs/citus.md, "Scale-out on Citus"'))
    const cli = await runScript(['distribute'], { DATABASE_URL: t.url })
    expect(cli.code).toBe(1)
    expect(cli.stderr.trim().split('\n')).toEqual(['error: this database has no citus extension, and distribute needs Citus (12 or later): nothing was changed; see docs/citus.md, "Scale-out on Citus"'])
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

describe('distribute\'s building blocks, on the contracted schema: the order of the tables, the sweep', () => {
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

  // An outside review on Citus: the app pointed a rating left dangling by a skill deleted while
  // the keys were off at a skill it had just added, and committed while the sweep waited for the
  // row; READ COMMITTED re-checked the row with the statement's old snapshot, and deleted it.
  it('the sweep does not delete a row the app points at a live parent while the sweep waits for it', async () => {
    const { rows: key } = await sql<{ name: string; definition: string }>`select conname as name, pg_get_constraintdef(oid) as definition from pg_constraint
      where conrelid = 'public.ratings'::regclass and confrelid = 'public.skills'::regclass and contype = 'f'`.execute(t.admin)
    expect(key).toHaveLength(1)
    const keys = [{ table: 'ratings', ...key[0]! }]
    await sql.raw(`set skills_db.all_tenants = on;
      alter table ratings drop constraint "${keys[0]!.name}";
      insert into skills (id, tenant_id, slug, name, description, content, category) values ('race-s', '${A}', 'race-s', 'n', 'd', 'c', 'c');
      insert into ratings (id, tenant_id, skill_id, user_id, rating) values ('race-r', '${A}', 'race-s', 'uA1', 3);
      delete from skills where id = 'race-s';
      alter table ratings add constraint "${keys[0]!.name}" ${keys[0]!.definition} not valid`).execute(t.admin)
    // Two more sessions of the test's own superuser (its URL carries its credentials on any server).
    const app = createDb<any>(t.url, { max: 1 })
    const sweeper = createDb<any>(t.url, { max: 1 })
    try {
      let commit = () => {}
      const held = new Promise<void>((r) => (commit = r))
      let pointed = () => {}
      const updated = new Promise<void>((r) => (pointed = r))
      const appDone = app.transaction().execute(async (trx) => {
        await sql.raw(`set local skills_db.all_tenants = on;
          insert into skills (id, tenant_id, slug, name, description, content, category) values ('race-new', '${A}', 'race-new', 'n', 'd', 'c', 'c');
          update ratings set skill_id = 'race-new' where id = 'race-r'`).execute(trx)
        pointed()
        await held
      })
      // The app's update holds the rating's row before the sweep starts (on a loaded machine the
      // sweep once ran first, and rightly deleted the rating, dangling then: the test's race).
      await updated
      const swept = inRun({ lockTimeoutMs: 10_000, lockRetryBudgetMs: 30_000 }, () => referencesBack(sweeper, keys))
      // The sweep waits for the rating's row lock.
      for (let i = 0; i < 200; i++) {
        const { rows } = await sql`select 1 from pg_stat_activity where wait_event_type = 'Lock' and query like 'delete from "ratings"%' and datname = current_database()`.execute(t.admin)
        if (rows.length > 0) break
        await new Promise((r) => setTimeout(r, 25))
      }
      commit()
      await appDone
      await swept
      const { rows } = await sql`select id, skill_id from ratings where id = 'race-r'`.execute(t.admin)
      expect(rows).toEqual([{ id: 'race-r', skill_id: 'race-new' }])
    } finally {
      await app.destroy()
      await sweeper.destroy()
    }
  })
})
