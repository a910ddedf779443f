import { sql, type Kysely } from 'kysely'
import { describe, expect, inject, it } from 'vitest'
import { takeSchemaSnapshot } from '../src/catalog/schema-snapshot.ts'
import { citusReadiness } from '../src/citus/readiness.ts'
import { createDb } from '../src/connection/create-db.ts'
import { migrateContract, migrateDown, migrateOpen, migrateToLatest } from '../src/migrator/migrate.ts'
import { migrationStatus } from '../src/migrator/migration-status.ts'
import { resolveApiKey } from '../src/tenancy/resolve-api-key.ts'
import { withTenant } from '../src/tenancy/with-tenant.ts'
import { takeCatalogSnapshot } from './support/catalog-snapshot.ts'
import { useLegacyDatabases, type TestDatabase } from './support/database.ts'
import { TENANT_TABLES } from '../fixtures/legacy.ts'
import { CONTRACT_MIGRATION_NAMES, GATED_MIGRATION_NAMES, OPEN_MIGRATION_NAMES } from './support/migration-names.ts'
import { TEST_TENANT_KEY } from './support/tenant-key.ts'
import { A, B, NOT_THE_OLD_APP, seedTwoTenants } from './support/tenants.ts'
import { connectClient } from '../src/connection/pg-client.ts'

const appRole = inject('appRole')
const legacyDb = useLegacyDatabases()
const TEN = [...TENANT_TABLES, 'audit_logs']
const OPEN = '0014_open_to_more_tenants'

/** A legacy database, migrated as far as latest goes and opened to more tenants, with tenants A and B beside the default one. */
async function expanded(): Promise<TestDatabase> {
  const t = await legacyDb()
  await sql.raw(`alter database "${t.name}" set timezone to 'UTC'`).execute(t.admin)
  expect(await migrateToLatest(t.admin, { appRole, tenantKeys: [TEST_TENANT_KEY] })).toMatchObject({ status: 'applied', waiting: GATED_MIGRATION_NAMES })
  expect(await migrateOpen(t.admin, { appRole })).toMatchObject({ status: 'applied', waiting: CONTRACT_MIGRATION_NAMES })
  await seedTwoTenants(t.admin)
  return t
}

const contracted = CONTRACT_MIGRATION_NAMES.map((name) => ({ name }))

const rows = async <R>(db: Kysely<any>, query: ReturnType<typeof sql<R>>) => (await query.execute(db)).rows

describe('the contract phase (skills-db contract), once the old app is retired', () => {
  it('refuses while a session of the old app\'s role is connected, changing nothing; goes ahead when told to', async () => {
    const t = await legacyDb()
    const old = `${inject('runId')}_ctold`
    await sql.raw(`create role "${old}" login password 'test'; grant select, insert, update, delete on users, skills, ratings, usage_events,
      skill_versions, skill_embeddings, skill_reviews, api_keys, site_settings to "${old}"`).execute(t.admin)
    expect(await migrateToLatest(t.admin, { appRole })).toMatchObject({ status: 'applied' })
    const u = new URL(t.url)
    u.username = old
    u.password = 'test'
    const session = await connectClient({ connectionString: u.toString(), application_name: 'the old app' })
    try {
      const before = await takeSchemaSnapshot(t.admin)
      const refused = await migrateContract(t.admin, { appRole })
      expect(refused).toMatchObject({ status: 'error', error: { migration: CONTRACT_MIGRATION_NAMES[0], message: expect.stringMatching(new RegExp(`sessions of its roles, or unconfined ones, are connected: pid \\d+ \\(${old}, the old app\\)\\. Stop it first`)) } })
      expect(await takeSchemaSnapshot(t.admin)).toEqual(before)
      expect((await migrationStatus(t.admin)).waiting).toEqual(GATED_MIGRATION_NAMES)
      // Not opened first: the contract phase opens it too, in name order.
      expect(await migrateContract(t.admin, { appRole, allowOldAppSessions: true })).toMatchObject({ status: 'applied', steps: GATED_MIGRATION_NAMES.map((name) => ({ name })), waiting: [] })
    } finally {
      await session.end()
      // Roles are cluster-wide: gone before the database is.
      await sql.raw(`drop owned by "${old}"; drop role "${old}"`).execute(t.admin)
    }
  })

  it('refuses a server TimeZone other than UTC (the timestamps would shift), unless told they are UTC', async () => {
    const t = await legacyDb()
    expect(await migrateToLatest(t.admin, { appRole })).toMatchObject({ status: 'applied' })
    await sql.raw(`alter database "${t.name}" set timezone to 'Europe/Berlin'`).execute(t.admin)
    await t.admin.destroy() // its session keeps the TimeZone it started with
    const db = createDb<any>(t.url, { max: 1 })
    try {
      expect(await migrateContract(db, { appRole })).toMatchObject({ status: 'error', error: { message: expect.stringMatching(/^the server's TimeZone is Europe\/Berlin, so the timestamp columns probably hold local times/) } })
      expect(await rows(db, sql`select format_type(atttypid, atttypmod) as t from pg_attribute where attrelid = 'usage_events'::regclass and attname = 'created_at'`)).toEqual([{ t: 'timestamp without time zone' }])
      expect(await migrateContract(db, { appRole, timestampsAreUtc: true })).toMatchObject({ status: 'applied' })
    } finally {
      await db.destroy()
    }
  })

  it('leaves every key tenant-inclusive, the lane and the global indexes gone, timestamps timestamptz (same instants, no rewrite), and the schema ready for Citus', async () => {
    const t = await expanded()
    const instants = sql<{ v: string }>`select string_agg(id || '@' || extract(epoch from created_at)::text, ',' order by id) as v from usage_events`
    const before = { instants: await rows(t.admin, instants), files: await rows(t.admin, sql`select relname, relfilenode from pg_class where relname in ('users', 'usage_events', 'api_keys') order by 1`) }
    expect((await citusReadiness(t.admin)).map((v) => v.rule)).toEqual(expect.arrayContaining(['keys include tenant_id', 'no SET NULL / SET DEFAULT with the distribution key']))

    expect(await migrateContract(t.admin, { appRole })).toMatchObject({ status: 'applied', steps: contracted })
    const keys = await rows<{ key: string }>(t.admin, sql`
      select c.relname || ': ' || pg_get_indexdef(i.indexrelid) as key from pg_index i join pg_class c on c.oid = i.indrelid
      where c.relname = any(${TEN}) and c.relnamespace = 'public'::regnamespace and i.indisunique
        and not exists (select 1 from pg_attribute a where a.attrelid = i.indrelid and a.attname = 'tenant_id' and a.attnum = any(i.indkey))`)
    expect(keys).toEqual([])
    const primary = await rows<{ table: string; columns: string }>(t.admin, sql`
      select c.relname as table, pg_get_constraintdef(k.oid) as columns from pg_constraint k join pg_class c on c.oid = k.conrelid
      where k.contype = 'p' and c.relname = any(${TEN}) and c.relnamespace = 'public'::regnamespace order by 1`)
    expect(primary.map((p) => p.columns)).toEqual(TEN.map(() => 'PRIMARY KEY (tenant_id, id)'))
    expect(await rows(t.admin, sql`select polrelid::regclass::text as t from pg_policy where polname = 'old_app_default_tenant'`)).toEqual([])
    // The lane's guard is gone; 0013's, against what would leak a tenant's values, and 0016's, against a TRUNCATE of every tenant, stay.
    expect(await rows(t.admin, sql`select tgname from pg_trigger where tgrelid = 'tenants'::regclass and not tgisinternal order by 1`))
      .toEqual([{ tgname: 'no_other_tenant_while_values_leak' }, { tgname: 'truncate_within_one_tenant' }])
    expect(await rows(t.admin, sql`select to_regclass('skills_slug_idx')::text as s, to_regclass('users_email_idx')::text as e, to_regclass('usage_events_created_at_idx')::text as c`))
      .toEqual([{ s: null, e: null, c: null }])
    expect(await rows(t.admin, sql`select count(*)::int as n from pg_attribute a join pg_class c on c.oid = a.attrelid
      where c.relnamespace = 'public'::regnamespace and c.relkind = 'r' and a.atttypid = 'timestamp'::regtype and not a.attisdropped`)).toEqual([{ n: 0 }])
    expect(await rows(t.admin, instants)).toEqual(before.instants)
    expect(await rows(t.admin, sql`select relname, relfilenode from pg_class where relname in ('users', 'usage_events', 'api_keys') order by 1`)).toEqual(before.files)
    expect(await citusReadiness(t.admin)).toEqual([])
  })

  it('deleting a user or a skill still clears the references to it, in its own tenant; a row without a tenant is refused', async () => {
    const t = await expanded()
    expect(await migrateContract(t.admin, { appRole })).toMatchObject({ status: 'applied' })
    const app = t.connectAs(appRole, 'test', 1)
    await withTenant(app, A, async (trx) => {
      await trx.deleteFrom('users').where('id', '=', 'uA1').execute()
      await trx.deleteFrom('skills').where('id', '=', 'sA2').execute()
    })
    expect(await rows(t.admin, sql`select id, author_id from skills where id in ('sA1', 'sB1') order by id`)).toEqual([{ id: 'sA1', author_id: null }, { id: 'sB1', author_id: 'uB1' }])
    expect(await rows(t.admin, sql`select id, user_id, skill_id from usage_events where id in ('eA1', 'eB1') order by id`)).toEqual([
      { id: 'eA1', user_id: null, skill_id: 'sA1' }, { id: 'eB1', user_id: 'uB1', skill_id: 'sB1' }])
    expect(await rows(t.admin, sql`select id, created_by from skill_versions where id = 'vA1'`)).toEqual([{ id: 'vA1', created_by: null }])
    expect(await rows(t.admin, sql`select id, requested_by from skill_reviews where id = 'wA1'`)).toEqual([{ id: 'wA1', requested_by: null }])
    // Cascades stay: A's rating by uA1 went with the user.
    expect(await rows(t.admin, sql`select id from ratings where id = 'rA1'`)).toEqual([])
    // The default tenant is no longer anyone's fallback: an insert without a tenant fails.
    await expect(sql`insert into usage_events (id, tool_name) values ('no-tenant', 'cli')`.execute(t.admin)).rejects.toThrow(/null value in column "tenant_id"/)
  })

  it('the global-key oracles are gone: as the app role in A, B\'s ids, key hashes and pairs are values like any other', async () => {
    const t = await expanded()
    const app = t.connectAs(appRole, 'test', 1)
    const probe = (rowsFor: (trx: Parameters<Parameters<typeof withTenant>[2]>[0]) => Promise<unknown>) =>
      withTenant(app, A, async (trx) => {
        await sql`savepoint s`.execute(trx)
        try {
          await rowsFor(trx)
          return 'ok'
        } catch (error) {
          return (error as { code?: string }).code
        } finally {
          await sql`rollback to savepoint s`.execute(trx)
        }
      })
    const attempts = {
      id: () => probe((trx) => trx.insertInto('usage_events').values({ id: 'eB1', tool_name: 'x' }).execute()),
      keyHash: () => probe((trx) => trx.insertInto('api_keys').values({ id: 'kX', user_id: 'uA1', key_hash: 'hash-b', key_prefix: 'p', name: 'n' }).execute()),
      // B's pair: the unique key is checked before the reference to B's rows is.
      rating: () => probe((trx) => trx.insertInto('ratings').values({ id: 'rX', skill_id: 'sB1', user_id: 'uB1', rating: 1 }).execute()),
    }
    // Before: each collides with B's row, and the unique violation tells A that it exists.
    expect({ id: await attempts.id(), keyHash: await attempts.keyHash(), rating: await attempts.rating() }).toEqual({ id: '23505', keyHash: '23505', rating: '23505' })
    expect(await migrateContract(t.admin, { appRole })).toMatchObject({ status: 'applied' })
    // After: A's own id and hash are free; B's pair fails as any unknown reference does.
    expect({ id: await attempts.id(), keyHash: await attempts.keyHash(), rating: await attempts.rating() }).toEqual({ id: 'ok', keyHash: 'ok', rating: '23503' })
  })

  it('created_at > now() - interval under row security uses the (tenant_id, created_at) index; an API key resolves in its own tenant, whoever copies its hash', async () => {
    const t = await expanded()
    // 200 days of A's and B's events: three days of them are few, and the index is what finds them.
    await sql`insert into usage_events (id, tenant_id, tool_name, created_at)
      select 'bulk' || g, case when g % 2 = 0 then ${A} else ${B} end, 'x', now() - g * interval '30 minutes' from generate_series(1, 20000) g`.execute(t.admin)
    const app = t.connectAs(appRole, 'test', 1)
    const planOf = () => withTenant(app, A, async (trx) =>
      (await sql<{ 'QUERY PLAN': string }>`explain select skill_id, count(*) from usage_events where created_at > now() - interval '3 days' group by 1`.execute(trx)).rows.map((r) => r['QUERY PLAN']).join('\n'))
    // Before: timestamp against timestamptz is not leakproof, so row security applies it after the scan.
    expect(await planOf()).not.toMatch(/Index Cond: [^\n]*created_at/)
    expect(await migrateContract(t.admin, { appRole })).toMatchObject({ status: 'applied' })
    const plan = await planOf()
    expect(plan).toMatch(/Index Cond: \(\(tenant_id = 'tenant-a'::text\) AND \(created_at > \(now\(\) - '3 days'::interval\)\)\)/)

    expect(await resolveApiKey(app, { tenantId: B, keyHash: 'hash-b' })).toEqual({ tenantId: B, userId: 'uB1' })
    // A stores a key with B's hash (possible now: keys are unique per tenant): B's key still resolves to B, A's to A.
    await withTenant(app, A, (trx) => trx.insertInto('api_keys').values({ id: 'kAdup', user_id: 'uA1', key_hash: 'hash-b', key_prefix: 'p', name: 'dup' }).execute())
    expect(await resolveApiKey(app, { tenantId: B, keyHash: 'hash-b' })).toEqual({ tenantId: B, userId: 'uB1' })
    expect(await resolveApiKey(app, { tenantId: A, keyHash: 'hash-b' })).toEqual({ tenantId: A, userId: 'uA1' })
    // A key that names no tenant is the single-tenant app's: the default tenant's, and B's hash is not one.
    expect(await resolveApiKey(app, 'hash-b')).toBeUndefined()
  })

  it('down refuses while there is more than one tenant, changing nothing: it would bring back the global keys', async () => {
    const t = await expanded()
    expect(await migrateContract(t.admin, { appRole })).toMatchObject({ status: 'applied' })
    const catalog = () => takeCatalogSnapshot(t.admin, { appRole })
    const contractedSchema = await catalog()
    expect(await migrateDown(t.admin)).toMatchObject({ status: 'error', error: { kind: 'down-blocked', message: expect.stringMatching(/^cannot roll back the contract phase: the database has 3 tenants/) } })
    expect(await catalog()).toEqual(contractedSchema)
  })

  it('with one tenant, down brings back the single-tenant app\'s keys, and a second tenant is refused until the open phase runs again, which restores the opened schema exactly', async () => {
    const t = await legacyDb()
    await sql.raw(`alter database "${t.name}" set timezone to 'UTC'`).execute(t.admin)
    await migrateToLatest(t.admin, { appRole })
    expect(await migrateOpen(t.admin, { appRole })).toMatchObject({ status: 'applied' })
    // Grants, owners, policies' flags and roles too, not only the tables of public.
    const catalog = () => takeCatalogSnapshot(t.admin, { appRole })
    const opened = await catalog()
    expect(await migrateContract(t.admin, { appRole })).toMatchObject({ status: 'applied', steps: contracted })
    // Rolled back in the order applied: the contract phase, then the open phase's later migration.
    const laterOpen = OPEN_MIGRATION_NAMES.filter((n) => n !== OPEN).map((name) => ({ name }))
    expect(await migrateDown(t.admin, { to: OPEN })).toMatchObject({ status: 'applied', steps: [...contracted].reverse().concat(laterOpen.reverse()) })
    // 0010's down, written before the open phase, builds the single-tenant app's keys again.
    expect(await rows(t.admin, sql`select to_regclass('skills_slug_idx')::text as s, to_regclass('ratings_skill_id_user_id_unique')::text as r`)).toEqual([{ s: 'skills_slug_idx', r: 'ratings_skill_id_user_id_unique' }])
    await expect(sql.raw(`${NOT_THE_OLD_APP} insert into tenants (id, name, slug) values ('tb', 'B', 'b')`).execute(t.admin))
      .rejects.toThrow(/refusing to create tenant "b": the app role could observe other tenants' values: index .* neither leads with tenant_id/)
    expect(await migrateDown(t.admin)).toMatchObject({ status: 'applied', steps: [{ name: OPEN, direction: 'Down' }] })
    expect(await migrateOpen(t.admin, { appRole })).toMatchObject({ status: 'applied', steps: OPEN_MIGRATION_NAMES.map((name) => ({ name })) })
    expect(await catalog()).toEqual(opened)
  })
})
