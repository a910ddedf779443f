import { sql, type Kysely } from 'kysely'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { startOldApp } from '../fixtures/old-app.ts'
import { countsAt, fillProductionCopy } from '../fixtures/production-copy.ts'
import { takeSchemaSnapshot } from '../src/catalog/schema-snapshot.ts'
import { createDb } from '../src/connection/create-db.ts'
import { withDatabase } from '../src/connection/database-url.ts'
import { adminQuery, dropScratchDatabase, scratchName } from '../src/connection/scratch-database.ts'
import { migrateDown, migrateOpen, migrateToLatest } from '../src/migrator/migrate.ts'
import { migrationStatus } from '../src/migrator/migration-status.ts'
import { withTenant } from '../src/tenancy/with-tenant.ts'
import type { DB } from '../src/db-types.ts'
import { runUntilKilled } from './faults/kill-point.ts'
import { runMigrateCli } from './faults/support.ts'
import { runScript } from './support/cli.ts'
import { LEGACY_SQL, TENANT_TABLES } from '../fixtures/legacy.ts'
import { MIGRATION_NAMES } from './support/migration-names.ts'
import { TEST_TENANT_KEY } from './support/tenant-key.ts'
import { connectClient } from '../src/connection/pg-client.ts'

/**
 * Managed hosting (RDS, Cloud SQL, Azure, Supabase): no superuser anywhere. The legacy tables belong
 * to a NOSUPERUSER NOBYPASSRLS CREATEROLE owner, as a platform's master user is; the migrator runs
 * as that owner; the old app runs as the owner or as a plain role with DML grants. The superuser
 * below only builds the scenery (roles, databases, a second tenant) and inspects.
 */
const runId = inject('runId')
const adminUrl = inject('adminUrl')
const appRole = inject('appRole')
const OWNER = `${runId}_mown`
const PLAIN = `${runId}_mold`
const ALL = MIGRATION_NAMES

interface OwnedDb {
  name: string
  url: (role: string) => string
  owner: Kysely<any>
  admin: Kysely<any>
  counts: ReturnType<typeof countsAt>
}

const opened: OwnedDb[] = []
beforeAll(async () => {
  await adminQuery(adminUrl, `create role ${OWNER} login password 'test' nosuperuser nobypassrls createrole createdb`)
  await adminQuery(adminUrl, `create role ${PLAIN} login password 'test' nosuperuser nobypassrls`)
})
afterAll(async () => {
  for (const d of opened) {
    await Promise.all([d.owner.destroy(), d.admin.destroy()])
    await dropScratchDatabase(adminUrl, d.name)
  }
})

/** The production database as a managed host has it: created by, and owned by, the owner role. */
async function ownedLegacyDb(scale = 0.002): Promise<OwnedDb> {
  const name = scratchName(`${runId}_mh`)
  await adminQuery(adminUrl, `create database ${name} owner ${OWNER}`)
  const url = (role: string) => {
    const u = new URL(withDatabase(adminUrl, name))
    u.username = role
    u.password = 'test'
    return u.toString()
  }
  const d: OwnedDb = { name, url, owner: createDb<any>(url(OWNER), { max: 2 }), admin: createDb<any>(withDatabase(adminUrl, name), { max: 2 }), counts: countsAt(scale) }
  opened.push(d)
  await sql.raw(LEGACY_SQL).execute(d.owner)
  await fillProductionCopy(d.owner, d.counts)
  // As many apps are set up: every privilege, not only the four the app uses.
  await sql.raw(`grant all on ${TENANT_TABLES.join(', ')} to ${PLAIN}`).execute(d.owner)
  return d
}

/**
 * A second tenant whose skill and settings row share the default tenant's keys. Written as the
 * superuser, once the database is opened to more tenants (by the owner, as production would).
 */
async function addTenantB(d: OwnedDb): Promise<void> {
  expect(await migrateOpen(d.owner, { appRole, allowOldAppSessions: true })).toMatchObject({ status: expect.stringMatching(/applied|up-to-date/) })
  await insertTenantB(d)
}

async function insertTenantB(d: OwnedDb): Promise<void> {
  await d.admin.transaction().execute(async (trx) => {
    // This test's own superuser sessions are not the old app.
    await sql`select set_config('skills_db.unconfined_sessions_ok', 'on', true)`.execute(trx)
    await sql`insert into tenants (id, name, slug) values ('tenant-b', 'B', 'b')`.execute(trx)
    await sql`insert into users (id, tenant_id, email) values ('uB', 'tenant-b', 'user1@example.com')`.execute(trx)
    await sql`insert into skills (id, tenant_id, name, slug, description, category, content, author_id)
      values ('sB', 'tenant-b', 'B', 'skill-1', 'd', 'c', 'c', 'uB')`.execute(trx)
    await sql`insert into site_settings (id, tenant_id, ollama_model) values ('default', 'tenant-b', 'model-b')`.execute(trx)
  })
}

async function asRole<T>(url: string, fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = await connectClient({ connectionString: url })
  try {
    return await fn(client)
  } finally {
    await client.end()
  }
}

describe('managed hosting: no superuser migrates or serves', () => {
  it('the owner is what a managed host gives: no superuser, no BYPASSRLS, CREATEROLE', async () => {
    const { rows } = await adminQuery(adminUrl, `select rolsuper, rolbypassrls, rolcreaterole from pg_roles where rolname = $1`, [OWNER])
    expect(rows).toEqual([{ rolsuper: false, rolbypassrls: false, rolcreaterole: true }])
  })

  it.each([
    ['the owner', OWNER],
    ['a plain role with DML grants', PLAIN],
  ])('adoption and latest as the owner while the old app runs as %s: no error, no empty lookup, no row lost; it stays in the default tenant', async (_label, oldAppRole) => {
    const d = await ownedLegacyDb(0.01)
    const app = startOldApp(d.url(oldAppRole), { connections: 3, skills: d.counts.skills, users: d.counts.users, maxMs: 120_000 })
    await new Promise((r) => setTimeout(r, 300))
    const outcome = await migrateToLatest(d.owner, { appRole })
    await new Promise((r) => setTimeout(r, 500))
    await app.stop()

    expect(outcome, JSON.stringify(outcome)).toMatchObject({ status: 'applied', adopted: true })
    expect(app.samples.filter((s) => s.error).map((s) => s.error)).toEqual([])
    expect(app.samples.filter((s) => s.empty)).toEqual([])
    expect(app.acknowledged.length).toBeGreaterThan(20)
    const { rows } = await sql<{ tenant_id: string }>`select distinct t.slug as tenant_id from usage_events e join tenants t on t.id = e.tenant_id
      where e.id = any(${app.acknowledged})`.execute(d.admin)
    expect(rows).toEqual([{ tenant_id: 'default' }])
    expect((await sql<{ n: number }>`select count(*)::int as n from usage_events where id = any(${app.acknowledged})`.execute(d.admin)).rows[0]!.n).toBe(app.acknowledged.length)

    // The statements that crossed tenants as a superuser stay in the default tenant now.
    await addTenantB(d)
    await asRole(d.url(oldAppRole), async (c) => {
      expect((await c.query(`update skills set total_uses = total_uses + 1 where slug = $1`, ['skill-1'])).rowCount).toBe(1)
      const found = await c.query(`select id, tenant_id from skills where slug = $1`, ['skill-1'])
      expect(found.rows).toEqual([{ id: 's1', tenant_id: expect.not.stringMatching(/tenant-b/) }])
      expect((await c.query(`update site_settings set ollama_model = 'changed' where id = 'default'`)).rowCount).toBe(1)
      expect((await c.query(`select count(*)::int as n from users where email = 'user1@example.com'`)).rows).toEqual([{ n: 1 }])
      await expect(c.query(`insert into usage_events (id, tool_name, tenant_id) values ('x', 't', 'tenant-b')`))
        .rejects.toThrow(/new row violates row-level security policy/)
      await expect(c.query(`update skills set tenant_id = 'tenant-b' where id = 's1'`)).rejects.toThrow(/new row violates row-level security policy/)
      // Naming a tenant does not switch it: that policy is the application role's alone. Nor does the
      // owner's all-tenants setting widen the owner's view (since 0014): it takes the migrator's secret.
      await c.query(`select set_config('app.current_tenant_id', 'tenant-b', false)`)
      await c.query(`select set_config('skills_db.all_tenants', 'on', false), set_config('skills_db.maintenance_view', 'guess', false)`)
      expect((await c.query(`select distinct tenant_id from skills where slug = 'skill-1'`)).rows).toEqual([{ tenant_id: expect.not.stringMatching(/tenant-b/) }])
      expect((await c.query(`update skills set name = name where slug = 'skill-1'`)).rowCount).toBe(1)
      // and its lookups are index scans on the tenant-leading keys (the global ones are gone): its lane folds to a constant.
      const plan = (await c.query(`explain select id from skills where slug = 'skill-1'`)).rows.map((r) => r['QUERY PLAN']).join('\n')
      expect(plan).toMatch(/Index (Only )?Scan using skills_tenant_slug_unique/)
      if (oldAppRole === OWNER) {
        // The owner keeps TRUNCATE, which row security does not cover: refused while other tenants exist (0016).
        await expect(c.query('truncate skills cascade')).rejects.toThrow(/TRUNCATE skills would remove the rows of every tenant/)
        await expect(c.query('truncate site_settings')).rejects.toThrow(/TRUNCATE site_settings would remove the rows of every tenant/)
      }
      if (oldAppRole === PLAIN) {
        // What row security does not cover is taken away: TRUNCATE, TRIGGER (code run as the next writer).
        await expect(c.query('truncate skills cascade')).rejects.toThrow(/permission denied for table skills/)
        await expect(c.query(`create function pg_temp.f() returns trigger language plpgsql as 'begin return new; end'`).then(() =>
          c.query('create trigger t before update on skills for each row execute function pg_temp.f()'))).rejects.toThrow(/permission denied for table skills/)
      }
    })
    const b = await sql`select total_uses, (select ollama_model from site_settings where tenant_id = 'tenant-b') as model from skills where id = 'sB'`.execute(d.admin)
    expect(b.rows).toEqual([{ total_uses: 0, model: 'model-b' }])
  })

  it('an old-app role named for the run is created with the old app\'s privileges, confined to the default tenant, and listed with the derived ones', async () => {
    const d = await ownedLegacyDb()
    const NAMED = `${runId}_mnew`
    const lines: string[] = []
    const outcome = await migrateToLatest(d.owner, { appRole, oldAppRoles: [NAMED], logger: { info: (m) => lines.push(m) } })
    expect(outcome).toMatchObject({ status: 'applied' })
    expect(lines.filter((l) => l.includes('old app roles,'))).toEqual([
      `  old app roles, confined to the default tenant: ${NAMED} (named for this run); ${PLAIN} (has privileges on the tables); ${OWNER} (owner of the tables)`,
    ])
    await adminQuery(adminUrl, `alter role ${NAMED} password 'test'`)
    await addTenantB(d)
    await asRole(d.url(NAMED), async (c) => {
      expect((await c.query(`select tenant_id from skills where slug = 'skill-1'`)).rows).toHaveLength(1)
      await c.query(`insert into usage_events (id, tool_name) values ('from-named', 'cli')`)
    })
    const landed = await sql`select t.slug from usage_events e join tenants t on t.id = e.tenant_id where e.id = 'from-named'`.execute(d.admin)
    expect(landed.rows).toEqual([{ slug: 'default' }])
  })

  it('down as the owner: the data-loss guards see every tenant\'s rows; down to the baseline and latest again restore the schema exactly', async () => {
    const d = await ownedLegacyDb()
    const legacy = await takeSchemaSnapshot(d.admin)
    expect(await migrateToLatest(d.owner, { appRole })).toMatchObject({ status: 'applied' })
    await addTenantB(d)
    await sql`insert into audit_logs (tenant_id, action) values ('tenant-b', 'kept')`.execute(d.admin)

    // With two tenants the open phase is not rolled back (that would bring back what leaks B's values to A).
    // (0018 goes back freely: 0013's check it restores refuses more, on Citus, never less.)
    // (0020 goes back while no tenant was created, suspended or deleted through it: nothing of its log is lost.)
    expect(await migrateDown(d.owner)).toMatchObject({ status: 'applied', steps: [{ name: '0020_tenant_lifecycle' }] })
    expect(await migrateDown(d.owner)).toMatchObject({ status: 'applied', steps: [{ name: '0018_side_channels_judge_citus_shards' }] })
    expect(await migrateDown(d.owner)).toMatchObject({ status: 'error', error: { kind: 'down-blocked', migration: '0017_reserve_key_hash_index_name' } })
    expect(await migrateDown(d.owner, { to: '0014_open_to_more_tenants' })).toMatchObject({ status: 'error', error: { kind: 'down-blocked' } })
    // B's rows go (its audit row cannot: append-only), and the tenant with them, until the open phase and the guard are rolled back.
    await sql.raw(`delete from site_settings where tenant_id = 'tenant-b'; delete from skills where tenant_id = 'tenant-b';
      delete from users where tenant_id = 'tenant-b'; delete from tenants where id = 'tenant-b'`).execute(d.admin)
    expect(await migrateDown(d.owner, { to: '0012_app_role_limits' })).toMatchObject({ status: 'applied', steps: [{ name: '0017_reserve_key_hash_index_name' }, { name: '0016_truncate_within_one_tenant' }, { name: '0014_open_to_more_tenants' }, { name: '0021_tenant_context_finish_request' }, { name: '0019_tenant_context_per_session_challenge' }, { name: '0013_one_tenant_until_open' }] })
    // Row security would hide tenant B's rows from the owner: these refusals prove the owner's checks see them.
    // Back on the expand schema before the guard, B comes back: the downs' guards must see its rows.
    await insertTenantB(d)
    expect(await migrateDown(d.owner, { to: '0009_close_cross_tenant_oracles' })).toMatchObject({ status: 'error', steps: [{ name: '0012_app_role_limits' }], error: { migration: '0011_tamper_evident_audit', message: expect.stringMatching(/drops the audit trail's hash chain/) } })
    expect(await migrateDown(d.owner, { to: '0006_create_audit_logs', allowDataLoss: true })).toMatchObject({ status: 'applied', steps: [
      { name: '0011_tamper_evident_audit' }, { name: '0009_close_cross_tenant_oracles' }, { name: '0008_session_bound_tenant_context' }, { name: '0007_private_tenants_and_audit' }] })
    expect(await migrateDown(d.owner)).toMatchObject({ status: 'error', error: { message: expect.stringMatching(/dropping audit_logs deletes the audit trail/) } })
    expect(await migrateDown(d.owner, { allowDataLoss: true })).toMatchObject({ status: 'applied', steps: [{ name: '0006_create_audit_logs' }] })
    expect(await migrateDown(d.owner)).toMatchObject({ status: 'error', error: { message: expect.stringMatching(/skills\.slug "skill-1" is used by several tenants/) } })

    await sql`delete from skills where tenant_id = 'tenant-b'`.execute(d.admin)
    expect(await migrateDown(d.owner)).toMatchObject({ status: 'error', error: { message: expect.stringMatching(/users\.email "user1@example\.com" is used by several tenants/) } })
    await sql`delete from users where tenant_id = 'tenant-b'`.execute(d.admin)
    await sql`delete from site_settings where tenant_id = 'tenant-b'`.execute(d.admin)
    await sql`insert into usage_events (id, tenant_id, tool_name) values ('eB', 'tenant-b', 'cli')`.execute(d.admin)
    expect(await migrateDown(d.owner, { to: '0002_add_tenants' })).toMatchObject({ status: 'error', error: { message: expect.stringMatching(/rows of tenants other than the default one exist/) } })
    await sql`delete from usage_events where tenant_id = 'tenant-b'`.execute(d.admin)
    expect(await migrateDown(d.owner, { to: '0001_baseline' })).toMatchObject({ status: 'error', error: { message: expect.stringMatching(/deletes tenants other than the default one/) } })
    await sql`delete from tenants where id = 'tenant-b'`.execute(d.admin)
    expect(await migrateDown(d.owner, { to: '0001_baseline' })).toMatchObject({ status: 'applied' })
    expect(await takeSchemaSnapshot(d.admin)).toEqual(legacy)
    // The old app's role has back what 0005 took from it.
    const privileges = await sql<{ p: boolean }>`select has_table_privilege(${PLAIN}, 'skills', 'TRUNCATE') and has_table_privilege(${PLAIN}, 'skills', 'TRIGGER')
      and has_table_privilege(${PLAIN}, 'skills', 'REFERENCES') as p`.execute(d.admin)
    expect(privileges.rows).toEqual([{ p: true }])

    expect(await migrateToLatest(d.owner, { appRole })).toMatchObject({ status: 'applied' })
    expect((await migrationStatus(d.owner)).applied.map((m) => m.name)).toEqual(ALL)
  })

  it('kill -9 in the middle of 0005 as the owner, then a rerun completes', async () => {
    const d = await ownedLegacyDb(0.01)
    const killed = await runUntilKilled(d.url(OWNER), ['latest'], { at: /users_tenant_id_fk/ })
    expect(killed, killed.where).toMatchObject({ landed: true, result: { signal: 'SIGKILL' } })
    expect((await migrationStatus(d.admin)).applied.map((m) => m.name)).not.toContain('0005_enforce_tenant_id')
    const rerun = await runMigrateCli(d.url(OWNER), ['latest'])
    expect(rerun.code, rerun.stderr).toBe(0)
    expect((await migrationStatus(d.admin)).applied.map((m) => m.name)).toEqual(ALL)
    const invalid = await sql`select indexrelid::regclass::text from pg_index where not indisvalid`.execute(d.admin)
    expect(invalid.rows).toEqual([])
  })

  it('8 app instances booting at once as the owner: each migration applied once', async () => {
    const d = await ownedLegacyDb()
    const runs = await Promise.all(Array.from({ length: 8 }, () => runScript([], { DATABASE_URL: d.url(OWNER), APP_ROLE: appRole }, { script: 'test/support/boot-migrate.ts' })))
    const outcomes = runs.map((r) => {
      // (boot-migrate.ts prints an error outcome on stdout: CI once saw exit 1 with nothing on stderr.)
      expect(r.code, `${r.stderr}${r.stdout}`).toBe(0)
      return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { status: string }
    })
    expect(outcomes.filter((o) => o.status === 'applied')).toHaveLength(1)
    expect(outcomes.filter((o) => o.status === 'up-to-date')).toHaveLength(7)
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from skills_db.kysely_migration`.execute(d.admin)
    expect(rows).toEqual([{ n: ALL.length }])
  })

  it('the migrator\'s view of every tenant ends with the run: the pooled connection it used sees the default tenant only', async () => {
    const d = await ownedLegacyDb()
    const pool = createDb<any>(d.url(OWNER), { max: 1 })
    try {
      expect(await migrateToLatest(pool, { appRole })).toMatchObject({ status: 'applied' })
      await addTenantB(d)
      expect(await migrateToLatest(pool, { appRole })).toMatchObject({ status: 'up-to-date' })
      const { rows } = await sql<{ slug: string }>`select distinct t.slug from skills s join (values ('tenant-b', 'b')) t(id, slug) on t.id = s.tenant_id`.execute(pool)
      expect(rows).toEqual([])
      expect((await sql<{ n: number }>`select count(*)::int as n from skills where slug = 'skill-1'`.execute(pool)).rows).toEqual([{ n: 1 }])
    } finally {
      await pool.destroy()
    }
  })

  it('the application role stays in its tenant on an owner-migrated database, and the owner\'s switch does nothing for it', async () => {
    const d = await ownedLegacyDb()
    expect(await migrateToLatest(d.owner, { appRole, tenantKeys: [TEST_TENANT_KEY] })).toMatchObject({ status: 'applied' })
    await addTenantB(d)
    const app = createDb<DB>(d.url(appRole), { max: 1, tenantKey: TEST_TENANT_KEY })
    try {
      const seen = await withTenant(app, 'tenant-b', async (trx) => {
        await sql`select set_config('skills_db.all_tenants', 'on', true)`.execute(trx)
        const out: Record<string, string[]> = {}
        for (const table of [...TENANT_TABLES, 'audit_logs']) {
          const { rows } = await sql<{ t: string }>`select distinct tenant_id as t from ${sql.table(table)}`.execute(trx)
          out[table] = rows.map((r) => r.t)
        }
        return out
      })
      for (const table of TENANT_TABLES) expect(seen[table]!.every((t) => t === 'tenant-b'), table).toBe(true)
      expect(seen.skills).toEqual(['tenant-b'])
      const none = await sql<{ n: number }>`select count(*)::int as n from skills`.execute(app)
      expect(none.rows).toEqual([{ n: 0 }])
    } finally {
      await app.destroy()
    }
  })
})
