import { cpSync, mkdtempSync, rmSync } from 'node:fs'
import path from 'node:path'
import { sql, type Kysely } from 'kysely'
import { describe, expect, inject, it } from 'vitest'
import { takeSchemaSnapshot } from '../src/catalog/schema-snapshot.ts'
import { connectClient } from '../src/connection/pg-client.ts'
import { createDb } from '../src/connection/create-db.ts'
import { migrateContract, migrateOpen, migrateToLatest } from '../src/migrator/migrate.ts'
import { MIGRATIONS_DIR } from '../src/migrator/migration-provider.ts'
import { migrationStatus } from '../src/migrator/migration-status.ts'
import { runScript } from './support/cli.ts'
import { useLegacyDatabases, type TestDatabase } from './support/database.ts'
import { CONTRACT_MIGRATION_NAMES, GATED_MIGRATION_NAMES, OPEN_MIGRATION_NAMES } from './support/migration-names.ts'
import { TEST_TENANT_KEY } from './support/tenant-key.ts'
import { NOT_THE_OLD_APP } from './support/tenants.ts'

const appRole = inject('appRole')
const legacyDb = useLegacyDatabases()

/** A legacy database migrated by latest (the expand phase), with a plain role the old app uses, which 0005 confines. */
async function expanded(oldRole: string): Promise<TestDatabase> {
  const t = await legacyDb()
  await sql.raw(`create role "${oldRole}" login password 'test'; grant select, insert, update, delete on users, skills, ratings, usage_events,
    skill_versions, skill_embeddings, skill_reviews, api_keys, site_settings to "${oldRole}"`).execute(t.admin)
  expect(await migrateToLatest(t.admin, { appRole, tenantKeys: [TEST_TENANT_KEY] })).toMatchObject({ status: 'applied', waiting: GATED_MIGRATION_NAMES })
  return t
}

const newTenant = (db: Kysely<any>, id: string) => sql.raw(`${NOT_THE_OLD_APP} insert into tenants (id, name, slug) values ('${id}', '${id}', '${id}')`).execute(db)

describe('the open phase (skills-db open), before a second tenant', () => {
  it('a second tenant is refused before it, naming what would leak; allowed after it; refused again once an index added by hand breaks the rules', async () => {
    const old = `${inject('runId')}_opold1`
    const t = await expanded(old)
    try {
      await expect(newTenant(t.admin, 'tb')).rejects.toThrow(/^refusing to create tenant "tb": the app role could observe other tenants' values: column api_keys\.\w+ keeps planner statistics/)
      expect(await migrateOpen(t.admin, { appRole })).toMatchObject({ status: 'applied', steps: OPEN_MIGRATION_NAMES.map((name) => ({ name })), waiting: CONTRACT_MIGRATION_NAMES })
      expect((await sql`select v from skills_db.side_channel_violations() v`.execute(t.admin)).rows).toEqual([])
      await newTenant(t.admin, 'tb')
      // A lookup index added by hand, as someone tuning a slow query would.
      await sql`create index users_name_by_hand on users (name)`.execute(t.admin)
      await expect(newTenant(t.admin, 'tc')).rejects.toThrow(/index users_name_by_hand on users neither leads with tenant_id nor is in collation skills_db.internal/)
      await sql`drop index users_name_by_hand; create index users_name_by_hand on users (tenant_id, name)`.execute(t.admin)
      // A column that collects statistics again.
      await sql`alter table skills alter column name set statistics 100`.execute(t.admin)
      await expect(newTenant(t.admin, 'tc')).rejects.toThrow(/column skills.name keeps planner statistics/)
      await sql`alter table skills alter column name set statistics 0`.execute(t.admin)
      await newTenant(t.admin, 'tc')
    } finally {
      await sql.raw(`drop owned by "${old}"; drop role "${old}"`).execute(t.admin)
    }
  })

  it('refuses, changing nothing, while a superuser session is connected (the CLI in one line, exit 1); goes ahead when told none is the old app', async () => {
    const old = `${inject('runId')}_opold2`
    const t = await expanded(old)
    const session = await connectClient({ connectionString: t.url, application_name: 'an unconfined app' })
    try {
      const before = await takeSchemaSnapshot(t.admin)
      const refused = await migrateOpen(t.admin, { appRole })
      expect(refused).toMatchObject({ status: 'error', error: { kind: 'old-app-sessions', migration: OPEN_MIGRATION_NAMES[0], message: expect.stringMatching(/row security cannot confine a superuser or BYPASSRLS session: pid \d+ \(\w+, an unconfined app\)/) } })
      expect(await takeSchemaSnapshot(t.admin)).toEqual(before)
      const cli = await runScript(['open', '--no-codegen'], { DATABASE_URL: t.url })
      expect(cli.code).toBe(1)
      expect(cli.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^error: .*an unconfined app.*skills-db open --force goes ahead$/)])
      expect(await takeSchemaSnapshot(t.admin)).toEqual(before)
      expect((await migrationStatus(t.admin)).waiting).toEqual(GATED_MIGRATION_NAMES)
      const forced = await runScript(['open', '--force', '--no-codegen'], { DATABASE_URL: t.url })
      expect(forced.code, forced.stderr).toBe(0)
      expect((await migrationStatus(t.admin)).waiting).toEqual(CONTRACT_MIGRATION_NAMES)
    } finally {
      await session.end()
      await sql.raw(`drop owned by "${old}"; drop role "${old}"`).execute(t.admin)
    }
  })

  it('the old app on its confined role keeps working after it: inserts without a tenant, upserts on its global keys, lookups by slug, in the default tenant only', async () => {
    const old = `${inject('runId')}_opold3`
    const t = await expanded(old)
    expect(await migrateOpen(t.admin, { appRole })).toMatchObject({ status: 'applied' })
    await newTenant(t.admin, 'tb')
    await sql`insert into users (id, tenant_id, email) values ('ub', 'tb', 'ann@example.com');
      insert into skills (id, tenant_id, name, slug, description, category, content) values ('sb', 'tb', 'Lint', 'lint', 'd', 'dev', 'c')`.execute(t.admin)
    const u = new URL(t.url)
    u.username = old
    u.password = 'test'
    const app = createDb<any>(u.toString(), { max: 1 })
    try {
      await sql`insert into usage_events (id, tool_name, skill_id, user_id) values ('e9', 'cli', 's1', 'u1')`.execute(app)
      await sql`insert into ratings (id, skill_id, user_id, rating) values ('r9', 's1', 'u2', 1)
        on conflict (skill_id, user_id) do update set rating = excluded.rating`.execute(app)
      await sql`insert into skills (id, name, slug, description, category, content) values ('s1', 'x', 'x', 'x', 'x', 'x') on conflict (id) do nothing`.execute(app)
      expect((await sql`select id from skills where slug = 'lint'`.execute(app)).rows).toEqual([{ id: 's1' }])
      expect((await sql`select id from users where email = 'ann@example.com'`.execute(app)).rows).toEqual([{ id: 'u1' }])
      expect((await sql`select rating from ratings where skill_id = 's1' and user_id = 'u2'`.execute(app)).rows).toEqual([{ rating: 1 }])
      const defaultTenant = (await sql<{ id: string }>`select id from tenants where slug = 'default'`.execute(t.admin)).rows[0]!.id
      expect((await sql`select tenant_id from usage_events where id = 'e9'`.execute(t.admin)).rows).toEqual([{ tenant_id: defaultTenant }])
      // TRUNCATE passes row security by: the plain role has none; a superuser still may, in every replication mode's sense.
      await expect(sql`truncate usage_events`.execute(app)).rejects.toThrow(/permission denied for table usage_events/)
      await sql`set session_replication_role = replica; truncate usage_events; reset session_replication_role`.execute(t.admin)
      expect((await sql`select count(*)::int as n from usage_events`.execute(t.admin)).rows).toEqual([{ n: 0 }])
    } finally {
      await app.destroy()
      await sql.raw(`drop owned by "${old}"; drop role "${old}"`).execute(t.admin)
    }
  })

  it('a contract run that stopped after 0010 built its global key-hash index, before 0017 was written: the open phase drops it, and the next contract builds none', { timeout: 120_000 }, async () => {
    const old = `${inject('runId')}_opold4`
    const t = await expanded(old)
    const without0017 = mkdtempSync(path.join(MIGRATIONS_DIR, '..', '.test-migrations-'))
    cpSync(MIGRATIONS_DIR, without0017, { recursive: true, filter: (f) => path.basename(f) !== '0017_reserve_key_hash_index_name.ts' })
    const violations = async () => (await sql<{ v: string }>`select v from skills_db.side_channel_violations() v`.execute(t.admin)).rows.map((r) => r.v)
    const holder = await connectClient({ connectionString: t.url, application_name: 'holding users' })
    try {
      expect(await migrateOpen(t.admin, { appRole, allowOldAppSessions: true, migrationsDir: without0017 })).toMatchObject({ status: 'applied' })
      await newTenant(t.admin, 'tb')
      await sql.raw(`drop owned by "${old}"`).execute(t.admin)
      await holder.query('begin; lock table users in access share mode')
      const stopped = await migrateContract(t.admin, { appRole, allowOldAppSessions: true, timestampsAreUtc: true, lockRetryBudgetMs: 500, migrationsDir: without0017 })
      expect(stopped).toMatchObject({ status: 'error', error: { migration: '0010_contract_tenant_keys' } })
      await holder.query('rollback')
      expect(await violations()).toEqual([expect.stringMatching(/^index api_keys_key_hash_idx on api_keys neither leads with tenant_id/)])

      const opened = await migrateOpen(t.admin, { appRole, allowOldAppSessions: true })
      expect(opened).toMatchObject({ status: 'applied', steps: [{ name: '0017_reserve_key_hash_index_name' }] })
      expect(await violations()).toEqual([])
      expect((await sql<{ def: string }>`select pg_get_indexdef('api_keys_key_hash_idx'::regclass) as def`.execute(t.admin)).rows[0]!.def)
        .toMatch(/\(key_hash COLLATE skills_db.internal\) WHERE false$/)
      const checked: Promise<string[]>[] = []
      const contracted = await migrateContract(t.admin, { appRole, allowOldAppSessions: true, timestampsAreUtc: true, logger: { info: () => void checked.push(violations()) } })
      expect(contracted).toMatchObject({ status: 'applied', steps: CONTRACT_MIGRATION_NAMES.map((name) => ({ name })) })
      expect((await Promise.all(checked)).flat()).toEqual([])
      expect((await sql<{ t: string | null }>`select to_regclass('api_keys_key_hash_idx')::text as t`.execute(t.admin)).rows[0]!.t).toBeNull()
    } finally {
      await holder.end()
      rmSync(without0017, { recursive: true, force: true })
      await sql.raw(`drop owned by "${old}"; drop role if exists "${old}"`).execute(t.admin)
    }
  })
})
