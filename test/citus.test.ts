import { sql, type Kysely } from 'kysely'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { takeSchemaSnapshot } from '../src/catalog/schema-snapshot.ts'
import { citusReadiness } from '../src/citus/readiness.ts'
import { distribute, DistributeRefused, distributionOrder } from '../src/citus/distribute.ts'
import { createDb } from '../src/connection/create-db.ts'
import type { DB } from '../src/db-types.ts'
import { migrateContract, migrateToLatest } from '../src/migrator/migrate.ts'
import { withTenant } from '../src/tenancy/with-tenant.ts'
import { startCitusServer, type CitusServer } from './support/citus-server.ts'
import { runScript } from './support/cli.ts'
import { useTestDatabase } from './support/database.ts'
import { describeInjectionSuite } from './support/injection-suite.ts'
import { describeIsolationMatrix } from './support/isolation-matrix.ts'
import { LEGACY_ROWS, LEGACY_SQL, TENANT_TABLES } from '../fixtures/legacy.ts'
import { TEST_TENANT_KEY } from './support/tenant-key.ts'
import { A, B, seedTwoTenants } from './support/tenants.ts'

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

/**
 * The distribute path on a real Citus coordinator: CITUS_URL, or a container. Not run without
 * either (Citus is not packaged for this project's machines, and no container runtime answers).
 */
const citus = await startCitusServer()
const notRun = 'notRun' in citus ? `not run: ${citus.notRun}` : undefined
// The default reporter counts skipped tests without their names: say why these are not run.
if (notRun) console.log(`distribute on Citus: ${notRun}`)

describe.skipIf(notRun !== undefined)(`distribute on Citus${notRun ? ` (${notRun})` : ''}`, () => {
  const appRole = `${inject('runId')}_cz_app`
  let admin: Kysely<any>
  let app: Kysely<DB>
  let appUrl: string
  const sessions: Kysely<DB>[] = []
  beforeAll(async () => {
    const url = (citus as CitusServer).url
    admin = createDb<any>(url, { max: 1 })
    await sql.raw(`drop schema if exists public cascade; drop schema if exists skills_db cascade; drop schema if exists tenant_context cascade;
      create schema public; create extension if not exists citus`).execute(admin)
    await sql.raw(LEGACY_SQL + LEGACY_ROWS).execute(admin)
    expect(await migrateToLatest(admin, { appRole, tenantKeys: [TEST_TENANT_KEY] })).toMatchObject({ status: 'applied' })
    await seedTwoTenants(admin)
    expect(await migrateContract(admin, { appRole, allowOldAppSessions: true })).toMatchObject({ status: 'applied' })
    await sql.raw(`alter role "${appRole}" password 'test'`).execute(admin)
    const u = new URL(url)
    u.username = appRole
    u.password = 'test'
    appUrl = u.toString()
    app = createDb<DB>(appUrl, { max: 1, tenantKey: TEST_TENANT_KEY })
  }, 600_000)
  afterAll(async () => {
    await Promise.all(sessions.map((s) => s.destroy()))
    await app?.destroy()
    await admin?.destroy()
    await (citus as CitusServer).stop()
  })

  it('distributes the ten tables by tenant_id beside two reference tables; a rerun has nothing to do', async () => {
    expect(await citusReadiness(admin)).toEqual([])
    expect((await distribute(admin)).distributed).toHaveLength(10)
    const { rows } = await sql<{ t: string; kind: string }>`select logicalrelid::text as t, partmethod as kind from pg_dist_partition order by 1`.execute(admin)
    expect(rows.filter((r) => r.kind === 'h')).toHaveLength(10)
    expect(rows.filter((r) => r.kind === 'n').map((r) => r.t).sort()).toEqual(['skills_db.tenant_context_keys', 'tenants'])
    expect(await distribute(admin)).toEqual({ distributed: [] })
  })

  it('withTenant reaches the workers: a tenant sees its rows, a query naming the tenant goes to one shard', async () => {
    const seen = await withTenant(app, A, async (trx, { tenantId }) => ({
      rows: (await trx.selectFrom('skills').select('tenant_id').execute()).map((r) => r.tenant_id),
      plan: (await sql<{ 'QUERY PLAN': string }>`explain select * from skills where tenant_id = ${tenantId} and slug = 'lint'`.execute(trx)).rows.map((r) => r['QUERY PLAN']).join('\n'),
    }))
    expect([...new Set(seen.rows)]).toEqual([A])
    expect(seen.plan).toMatch(/Task Count: 1/)
  })

  it('SQL of the app role cannot switch tenant or replay a context on the workers', async () => {
    const stolen = await withTenant(app, A, async (trx) =>
      (await sql<{ s: string }>`select current_setting('tenant_context.signature') as s`.execute(trx)).rows[0]!.s)
    const reached = await withTenant(app, A, async (trx) => {
      await sql`set local app.current_tenant_id = ${sql.raw(`'${B}'`)}`.execute(trx)
      return (await sql<{ n: number }>`select count(*)::int as n from skills where tenant_id = ${B}`.execute(trx)).rows[0]!.n
    })
    expect(reached).toBe(0)
    const replayed = await app.transaction().execute(async (trx) => {
      await sql.raw(`set local app.current_tenant_id = '${A}'; set local tenant_context.entered = 'on'; set local tenant_context.signature = '${stolen}'`).execute(trx)
      return (await sql<{ n: number }>`select count(*)::int as n from skills`.execute(trx)).rows[0]!.n
    })
    expect(replayed).toBe(0)
  })

  // Once distributed, the same proofs as on one server: the policies now run on the workers, against
  // shards, with a tenant context that must have reached them (README, "Scale-out on Citus").
  describe('on the distributed tables', () => {
    // Run after distribute (the first test above), and only then: with it failed or filtered out,
    // the same proofs on tables still local would pass and prove nothing about Citus.
    beforeAll(async () => {
      const { rows } = await sql<{ n: number }>`select count(*)::int as n from pg_dist_partition where partmethod = 'h'`.execute(admin)
      expect(rows[0]!.n, 'the ten tables are distributed (run the whole file, not one test of it)').toBe(10)
    })

    describe('tenant isolation, as the application role', () => {
      describeIsolationMatrix(() => app, { role: () => appRole, shardNames: true })
    })

    describeInjectionSuite({
      app: () => app,
      admin: () => admin,
      connect: () => {
        const session = createDb<DB>(appUrl, { max: 1, tenantKey: TEST_TENANT_KEY })
        sessions.push(session)
        return session
      },
      ownerRole: () => new URL((citus as CitusServer).url).username,
      shardNames: true,
      moreAttacks: [
        ['citus: setting the distributed transaction id', `select assign_distributed_transaction_id(0, 1, now())`],
        ['citus: the whole worker context by SET LOCAL, signature made up', `set local tenant_context.entered = 'on'; set local app.current_tenant_id = '${B}'; set local tenant_context.signature = 'test:${'0'.repeat(64)}'`],
        ['citus: naming B on the workers directly', `select run_command_on_workers($$select set_config('app.current_tenant_id', '${B}', false)$$)`],
        ['citus: reading the shards themselves', `create temp table loot (tenant_id text); do $$ declare s text; begin
            for s in select shard_name(logicalrelid, shardid) from pg_dist_shard where logicalrelid = 'public.skills'::regclass loop
              begin execute format('insert into loot select tenant_id from %s', s); exception when others then null; end;
            end loop; end $$; select * from loot`],
      ],
    })
  })
})
