import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { takeSchemaSnapshot } from '../src/catalog/schema-snapshot.ts'
import { citusReadiness } from '../src/citus/readiness.ts'
import { distribute, DistributeRefused, distributionOrder } from '../src/citus/distribute.ts'
import { runScript } from './support/cli.ts'
import { useTestDatabase } from './support/database.ts'
import { TENANT_TABLES } from '../fixtures/legacy.ts'

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

  it('distributes every table the check sees as a tenant table, each after the tables it references', async () => {
    const order = await distributionOrder(t.admin)
    expect([...order].sort()).toEqual([...TENANT_TABLES, 'audit_logs', 'audit_signatures'].sort())
    const { rows } = await sql<{ child: string; parent: string }>`select c.relname as child, p.relname as parent from pg_constraint k
      join pg_class c on c.oid = k.conrelid join pg_class p on p.oid = k.confrelid
      where k.contype = 'f' and c.relname = any(${order}) and p.relname = any(${order}) and c.oid <> p.oid`.execute(t.admin)
    expect(rows.length).toBeGreaterThan(10)
    for (const { child, parent } of rows) expect(order.indexOf(parent), `${parent} before ${child}`).toBeLessThan(order.indexOf(child))
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
