import { sql, type Kysely } from 'kysely'
import { describe, expect, inject, it } from 'vitest'
import { takeSchemaSnapshot } from '../src/catalog/schema-snapshot.ts'
import legacySchema from '../src/migrator/legacy-schema.json' with { type: 'json' }
import { cpSync, mkdtempSync, rmSync } from 'node:fs'
import path from 'node:path'
import { afterAll } from 'vitest'
import { migrateContract, migrateDown, migrateOpen, migrateTo, migrateToLatest, migrateUp, type MigrateOptions } from '../src/migrator/migrate.ts'
import { MIGRATIONS_DIR } from '../src/migrator/migration-provider.ts'
import { migrationStatus } from '../src/migrator/migration-status.ts'
import { TENANT_TABLES } from '../fixtures/legacy.ts'
import { ALL_MIGRATION_NAMES, CONTRACT_MIGRATION_NAMES, FRESH_INSTALL_ORDER, MIGRATION_NAMES, OPEN_MIGRATION_NAMES } from './support/migration-names.ts'
import { takeCatalogSnapshot } from './support/catalog-snapshot.ts'
import { useLegacyDatabases } from './support/database.ts'
import { rowDigests } from '../fixtures/legacy.ts'
import { NOT_THE_OLD_APP } from './support/tenants.ts'

const appRole = inject('appRole')
const SEED_ID = 'default-tenant-000-0000-000000000000'
const CONTRACT_0010 = '0010_contract_tenant_keys'

const legacyDb = useLegacyDatabases()

/** Everything a down could leave different (grants, owners, policies' flags and roles, …), with the app role read as app_user. */
const fullSnapshot = (db: Kysely<any>) => takeCatalogSnapshot(db, { appRole })

const q = async <R>(db: Kysely<any>, query: ReturnType<typeof sql<R>>) => (await query.execute(db)).rows
/**
 * Applies exactly `name`, as a fresh install does (latest, then open, then contract): the phases
 * that wait for the operator apply it with their command, from a copy of the folder that ends with
 * it when the phase has more than one migration left.
 */
const up = async (db: Kysely<any>, name: string, options: MigrateOptions = {}) => {
  const outcome = CONTRACT_MIGRATION_NAMES.includes(name) ? await migrateContract(db, { appRole, ...options })
    : OPEN_MIGRATION_NAMES.includes(name) ? await migrateOpen(db, { appRole, ...options })
    : await migrateUp(db, { appRole, ...options })
  expect(outcome, JSON.stringify(outcome)).toMatchObject({ status: 'applied', steps: [{ name }] })
}
const folders: string[] = []
afterAll(() => folders.forEach((d) => rmSync(d, { recursive: true, force: true })))
/** The migrations folder as it was when `last` was the newest: what its recorded behaviour is about. */
function folderUpTo(last: string): string {
  const dir = mkdtempSync(path.join(MIGRATIONS_DIR, '..', '.test-migrations-'))
  folders.push(dir)
  cpSync(MIGRATIONS_DIR, dir, { recursive: true, filter: (f) => !/^\d{4}_/.test(path.basename(f)) || path.basename(f).slice(0, 4) <= last.slice(0, 4) })
  return dir
}

/**
 * The folder an open-phase migration was applied from on the fresh install's path: up to it, and
 * every expand migration (one written after it, such as 0019, is applied before it by latest).
 */
function folderForOpen(last: string): string {
  const dir = mkdtempSync(path.join(MIGRATIONS_DIR, '..', '.test-migrations-'))
  folders.push(dir)
  cpSync(MIGRATIONS_DIR, dir, { recursive: true, filter: (f) => !/^\d{4}_/.test(path.basename(f)) || path.basename(f).slice(0, 4) <= last.slice(0, 4) || MIGRATION_NAMES.includes(path.basename(f).slice(0, -3)) })
  return dir
}

/** Today's migrations folder without `name`. */
function folderWithout(name: string): string {
  const dir = mkdtempSync(path.join(MIGRATIONS_DIR, '..', '.test-migrations-'))
  folders.push(dir)
  cpSync(MIGRATIONS_DIR, dir, { recursive: true, filter: (f) => path.basename(f) !== `${name}.ts` })
  return dir
}

describe('the plan\'s must-haves, migration by migration, on the production schema with rows', () => {
  it('0002 … 0009 each do what the plan says', async () => {
    const t = await legacyDb()
    const rowsBefore = await rowDigests(t.admin)
    // The first run adopts the production schema (0001 recorded, not run), then applies 0002.
    expect(await migrateUp(t.admin, { appRole })).toMatchObject({ status: 'applied', adopted: true, steps: [{ name: '0002_add_tenants' }] })
    expect(await q(t.admin, sql`select id, name, slug, is_active, plan from tenants`)).toEqual([
      { id: SEED_ID, name: 'Default', slug: 'default', is_active: true, plan: 'freemium' },
    ])

    await up(t.admin, '0003_add_tenant_id_columns')
    const cols = await q<{ table: string; notnull: boolean }>(t.admin, sql`
      select c.relname as table, a.attnotnull as notnull from pg_attribute a join pg_class c on c.oid = a.attrelid
      where a.attname = 'tenant_id' and c.relname = any(${[...TENANT_TABLES]}) and c.relnamespace = 'public'::regnamespace`)
    expect(cols.map((c) => c.table).sort()).toEqual([...TENANT_TABLES].sort())
    expect(cols.every((c) => !c.notnull)).toBe(true)
    // Existing rows already belong to the default tenant (a catalog default: no rewrite).
    for (const table of TENANT_TABLES) {
      expect(await q(t.admin, sql`select distinct tenant_id from ${sql.table(table)}`)).toEqual([{ tenant_id: SEED_ID }])
    }
    // A row written with an explicit NULL is what the backfill is for.
    await sql`insert into usage_events (id, tool_name, tenant_id) values ('e-null', 'cli', null)`.execute(t.admin)

    await up(t.admin, '0004_backfill_tenant_id')
    for (const table of TENANT_TABLES) {
      expect(await q(t.admin, sql`select count(*)::int as n from ${sql.table(table)} where tenant_id is null`)).toEqual([{ n: 0 }])
    }

    await up(t.admin, '0005_enforce_tenant_id')
    const after5 = await takeSchemaSnapshot(t.admin)
    for (const table of TENANT_TABLES) {
      const s = after5[table]!
      expect(s.columns).toContain(`tenant_id text not null default COALESCE(NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text), '${SEED_ID}'::text)`)
      expect(s.constraints).toContain(`${table}_tenant_id_fk: FOREIGN KEY (tenant_id) REFERENCES tenants(id)`)
      expect(s.rowSecurity).toBe('forced')
      expect(s.policies).toEqual([
        `tenant_isolation ALL to ${appRole} using (tenant_id = NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text)) check (tenant_id = NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))`,
      ])
      expect(s.constraints.filter((c) => c.includes('not validated') || c.includes('not_null'))).toEqual([])
    }
    expect(after5.skills!.constraints).toContain('skills_tenant_slug_unique: UNIQUE (tenant_id, slug)')
    expect(after5.skills!.constraints.join('\n')).not.toMatch(/skills_slug_unique/)
    expect(after5.skill_embeddings!.constraints).toContain('skill_embeddings_tenant_skill_unique: UNIQUE (tenant_id, skill_id)')
    expect(after5.skill_reviews!.constraints).toContain('skill_reviews_tenant_skill_unique: UNIQUE (tenant_id, skill_id)')
    expect(after5.users!.constraints).toContain('users_tenant_email_unique: UNIQUE (tenant_id, email)')
    expect(after5.site_settings!.constraints).toContain('site_settings_pkey: PRIMARY KEY (tenant_id, id)')
    expect(after5.ratings!.constraints).toContain(
      'ratings_skill_id_tenant_fk: FOREIGN KEY (tenant_id, skill_id) REFERENCES skills(tenant_id, id) ON DELETE CASCADE')
    expect(after5.usage_events!.constraints).toContain(
      'usage_events_user_id_tenant_fk: FOREIGN KEY (tenant_id, user_id) REFERENCES users(tenant_id, id) ON DELETE SET NULL (user_id)')
    // No single-column reference between data tables is left.
    const plainRefs = Object.values(after5).flatMap((s) => s.constraints).filter((c) => /FOREIGN KEY \((?!tenant_id)/.test(c))
    expect(plainRefs).toEqual([])

    await up(t.admin, '0006_create_audit_logs')
    const audit = (await takeSchemaSnapshot(t.admin)).audit_logs!
    expect(audit.rowSecurity).toBe('forced')
    expect(audit.triggers).toEqual([
      'CREATE TRIGGER no_truncate BEFORE TRUNCATE ON public.audit_logs FOR EACH STATEMENT EXECUTE FUNCTION audit_logs_append_only()',
      'CREATE TRIGGER no_update_or_delete BEFORE DELETE OR UPDATE ON public.audit_logs FOR EACH ROW EXECUTE FUNCTION audit_logs_append_only()',
    ])
    const privileges = await q(t.admin, sql`
      select has_table_privilege(${appRole}, 'audit_logs', 'select') as s, has_table_privilege(${appRole}, 'audit_logs', 'insert') as i,
        has_table_privilege(${appRole}, 'audit_logs', 'update') as u, has_table_privilege(${appRole}, 'audit_logs', 'delete') as d,
        has_table_privilege(${appRole}, 'audit_logs', 'truncate') as t`)
    expect(privileges).toEqual([{ s: true, i: true, u: false, d: false, t: false }])

    await up(t.admin, '0007_private_tenants_and_audit')
    const after7 = await takeSchemaSnapshot(t.admin)
    expect(after7.tenants).toMatchObject({
      rowSecurity: 'enabled',
      policies: [`own_tenant SELECT to ${appRole} using (id = NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text))`],
    })
    expect(after7.audit_logs!.columns).toContain(`tenant_id text not null default NULLIF(current_setting('app.current_tenant_id'::text, true), ''::text)`)
    const modes = await q<{ t: string; mode: string }>(t.admin, sql`select tgname as t, tgenabled as mode from pg_trigger where tgrelid = 'audit_logs'::regclass and not tgisinternal order by 1`)
    expect(modes).toEqual([{ t: 'no_truncate', mode: 'A' }, { t: 'no_update_or_delete', mode: 'A' }, { t: 'stamp', mode: 'A' }])

    await up(t.admin, '0008_session_bound_tenant_context')
    const after8 = await takeSchemaSnapshot(t.admin)
    for (const table of [...TENANT_TABLES, 'audit_logs']) {
      expect(after8[table]!.policies.find((p) => p.startsWith('tenant_isolation')), table).toBe(
        `tenant_isolation ALL to ${appRole} using (tenant_id = tenant_context.current_tenant()) check (tenant_id = tenant_context.current_tenant())`)
    }
    expect(after8.tenants!.policies).toEqual([`own_tenant SELECT to ${appRole} using (id = tenant_context.current_tenant())`])
    // The planner folds current_tenant() once per statement; it is stored as a call, never folded at DDL time.
    const fns = await q(t.admin, sql`select proname, provolatile, prosecdef, proparallel from pg_proc
      where pronamespace = 'tenant_context'::regnamespace order by 1`)
    expect(fns).toEqual([
      { proname: 'challenge', provolatile: 's', prosecdef: false, proparallel: 'u' },
      { proname: 'current_tenant', provolatile: 'i', prosecdef: true, proparallel: 's' },
      { proname: 'enter', provolatile: 'v', prosecdef: true, proparallel: 'u' },
      { proname: 'tenant_is_active', provolatile: 's', prosecdef: true, proparallel: 'u' },
    ])
    // The mark is an unlogged sequence the app role may not touch; the keys are out of its sight.
    expect(await q(t.admin, sql`select relpersistence,
        has_sequence_privilege(${appRole}, 'tenant_context.session_tenant', 'usage') or has_sequence_privilege(${appRole}, 'tenant_context.session_tenant', 'update')
          or has_sequence_privilege(${appRole}, 'tenant_context.session_tenant', 'select') as app_may_use,
        has_table_privilege(${appRole}, 'skills_db.tenant_context_keys', 'select') as app_reads_keys
      from pg_class where oid = 'tenant_context.session_tenant'::regclass`)).toEqual([{ relpersistence: 'u', app_may_use: false, app_reads_keys: false }])

    await up(t.admin, '0009_close_cross_tenant_oracles')
    const after9 = await takeSchemaSnapshot(t.admin)
    expect(after9.audit_logs!.triggers).toContain(
      'CREATE TRIGGER actor_of_own_tenant AFTER INSERT ON public.audit_logs FOR EACH ROW EXECUTE FUNCTION skills_db.audit_logs_actor_of_own_tenant()')
    expect(await q(t.admin, sql`select has_function_privilege(${appRole}, 'tenant_context.tenant_is_active(text)', 'execute') as may`)).toEqual([{ may: false }])
    // Content columns keep no statistics (EXPLAIN cannot estimate from other tenants' values); keys, numbers and times do.
    await sql`analyze`.execute(t.admin)
    const kept = await q<{ col: string }>(t.admin, sql`select tablename || '.' || attname as col from pg_stats
      where schemaname = 'public' and (tablename, attname) in (('skills', 'slug'), ('users', 'email'), ('api_keys', 'key_hash'), ('skills', 'tenant_id'), ('skills', 'total_uses'))
      order by 1`)
    expect(kept.map((r) => r.col)).toEqual(['skills.tenant_id', 'skills.total_uses'])

    // Nothing lost on the way: every row, every value (tenant_id aside) as before.
    // (The row the old app added mid-run, checked above, goes first.)
    await sql`delete from usage_events where id = 'e-null'`.execute(t.admin)
    expect(await rowDigests(t.admin)).toEqual(rowsBefore)
  })

  it('finds the default tenant by slug when it already exists under another id', async () => {
    const t = await legacyDb()
    await migrateUp(t.admin, { appRole })
    await sql`update tenants set id = 'acme-legacy' where slug = 'default'`.execute(t.admin)
    expect((await migrateToLatest(t.admin, { appRole })).status).toBe('applied')
    expect(await q(t.admin, sql`select id from tenants`)).toEqual([{ id: 'acme-legacy' }])
    for (const table of TENANT_TABLES) {
      expect(await q(t.admin, sql`select distinct tenant_id from ${sql.table(table)}`)).toEqual([{ tenant_id: 'acme-legacy' }])
    }
  })
})

describe('the application role', () => {
  it('a superuser is refused as the app role before anything changes, and the refusal does not stick to the database', async () => {
    const t = await legacyDb()
    const before = await takeSchemaSnapshot(t.admin)
    const refused = await migrateToLatest(t.admin, { appRole: 'postgres' })
    expect(refused).toMatchObject({
      status: 'error',
      steps: [],
      error: { kind: 'preflight', message: 'the application role postgres has SUPERUSER, so row-level security would not hold it: nothing was changed; ALTER ROLE postgres NOSUPERUSER, or pick another role' },
    })
    expect(await takeSchemaSnapshot(t.admin)).toEqual(before)
    expect((await migrationStatus(t.admin)).applied).toEqual([])
    expect((await migrateToLatest(t.admin, { appRole })).status).toBe('applied')
  })
})

describe('reversible', () => {
  it('every migration\'s down restores the schema before it exactly; up → down → up keeps every row', async () => {
    const t = await legacyDb()
    const contents = await rowDigests(t.admin)
    await migrateUp(t.admin, { appRole }) // adopts 0001, applies 0002
    await migrateDown(t.admin)
    // Each as written, from the folder of its day, up to the contract phase's 0010; then the later
    // ones in the order a fresh install applies them (latest, open, contract), from today's folder.
    // 0010 then runs after 0014, and its down cannot take back what 0014 changed (test/contract.test.ts).
    const asWritten = ALL_MIGRATION_NAMES.slice(1).filter((n) => n <= CONTRACT_0010)
    const afterwards = FRESH_INSTALL_ORDER.filter((n) => n > CONTRACT_0010)
    const atBaseline = await fullSnapshot(t.admin)
    const check = async (name: string, migrationsDir: string) => {
      const before = await fullSnapshot(t.admin)
      // 0015's down, written before 0017, rebuilds 0010's global key-hash index where 0017's empty
      // one stood (it runs with one tenant only; 0010's down then drops it, whichever it is).
      const restored = name !== '0015_contract_without_side_channels' ? before : JSON.parse(JSON.stringify(before).replaceAll(
        'api_keys_key_hash_idx ON public.api_keys USING btree (key_hash COLLATE skills_db.internal) WHERE false',
        'api_keys_key_hash_idx ON public.api_keys USING btree (key_hash)'))
      if (name === '0015_contract_without_side_channels') expect(restored, 'the empty index was there before 0015').not.toEqual(before)
      // (After 0010 the timestamps are timestamptz, which the row digests print otherwise.)
      const rowsBefore = await rowDigests(t.admin)
      await up(t.admin, name, { migrationsDir })
      const applied = await fullSnapshot(t.admin)
      // 0004 changes data only: its schema is the one before it; every other migration changes the schema.
      if (name === '0004_backfill_tenant_id') expect(applied, name).toEqual(before)
      else expect(applied, name).not.toEqual(before)
      expect(await migrateDown(t.admin, { appRole, migrationsDir })).toMatchObject({ status: 'applied', steps: [{ name, direction: 'Down' }] })
      expect(await fullSnapshot(t.admin), `down of ${name}`).toEqual(restored)
      expect(await rowDigests(t.admin), `rows after down of ${name}`).toEqual(rowsBefore)
      await up(t.admin, name, { migrationsDir })
      expect(await fullSnapshot(t.admin), `up again of ${name}`).toEqual(applied)
    }
    for (const name of asWritten) await check(name, folderUpTo(name))
    expect(await migrateDown(t.admin, { appRole, migrationsDir: folderUpTo(CONTRACT_0010) })).toMatchObject({ status: 'applied', steps: [{ name: CONTRACT_0010 }] })
    for (const name of afterwards) {
      // 0010 again, alone: from today's folder without 0015, which the contract phase would apply with it.
      if (name === '0015_contract_without_side_channels') await up(t.admin, CONTRACT_0010, { migrationsDir: folderWithout(name) })
      // The open phase has more than one migration: each from the folder that ends with it.
      await check(name, OPEN_MIGRATION_NAMES.includes(name) ? folderForOpen(name) : MIGRATIONS_DIR)
    }
    expect(await migrateDown(t.admin, { to: '0001_baseline', appRole })).toMatchObject({ status: 'applied' })
    expect(await fullSnapshot(t.admin), 'down of everything, in one run').toEqual(atBaseline)
    expect(await takeSchemaSnapshot(t.admin)).toEqual(legacySchema)
    expect(await rowDigests(t.admin)).toEqual(contents)
    // What table snapshots do not show is gone too: functions, grants, the recorded role.
    expect(await q(t.admin, sql`select proname from pg_proc where pronamespace = 'public'::regnamespace`)).toEqual([])
    expect(await q(t.admin, sql`select count(*)::int as n from information_schema.role_table_grants where grantee = ${appRole}`)).toEqual([{ n: 0 }])
    expect(await q(t.admin, sql`select count(*)::int as n from skills_db.settings`)).toEqual([{ n: 0 }])
    expect((await migrateToLatest(t.admin, { appRole })).status).toBe('applied')
    expect(await rowDigests(t.admin)).toEqual(contents)
  })

  // A second tenant waits for the open phase since 0013: these run where its tenants came before that.
  it('a down that would merge tenants refuses, changing nothing, unless forced', async () => {
    const t = await legacyDb()
    await migrateTo(t.admin, '0012_app_role_limits', { appRole })
    await sql.raw(`${NOT_THE_OLD_APP} insert into tenants (id, name, slug) values ('tb', 'B', 'b');
      insert into users (id, tenant_id, email) values ('ub', 'tb', 'b@b');`).execute(t.admin)
    const refused = await migrateDown(t.admin, { to: '0002_add_tenants' })
    expect(refused).toMatchObject({
      status: 'error',
      error: { migration: '0003_add_tenant_id_columns', kind: 'data-loss', message: expect.stringMatching(/^refusing to roll back: rows of tenants other than the default one exist.*; allowDataLoss accepts the loss$/) },
    })
    const status = await migrationStatus(t.admin)
    expect(status.applied.at(-1)!.name).toBe('0003_add_tenant_id_columns')
    expect(await q(t.admin, sql`select tenant_id from users where id = 'ub'`)).toEqual([{ tenant_id: 'tb' }])

    const forced = await migrateDown(t.admin, { to: '0002_add_tenants', allowDataLoss: true })
    expect(forced).toMatchObject({ status: 'applied', steps: [{ name: '0003_add_tenant_id_columns' }] })
  })

  it('undoing per-tenant keys refuses while tenants share a slug, with the schema untouched', async () => {
    const t = await legacyDb()
    await migrateTo(t.admin, '0012_app_role_limits', { appRole })
    await sql.raw(`${NOT_THE_OLD_APP} insert into tenants (id, name, slug) values ('tb', 'B', 'b');
      insert into skills (id, tenant_id, name, slug, description, category, content) values ('sb', 'tb', 'Lint', 'lint', 'd', 'c', 'c');`).execute(t.admin)
    await migrateDown(t.admin, { to: '0005_enforce_tenant_id' }) // 0007, 0006 (no audit rows yet)
    const before = await takeSchemaSnapshot(t.admin)
    const refused = await migrateDown(t.admin)
    expect(refused).toMatchObject({ status: 'error', error: { migration: '0005_enforce_tenant_id', message: expect.stringMatching(/skills\.slug "lint" is used by several tenants/) } })
    // No option overrules it: the data must change first.
    expect(await migrateDown(t.admin, { to: '0004_backfill_tenant_id', allowDataLoss: true })).toMatchObject({ status: 'error', error: { kind: 'down-blocked', migration: '0005_enforce_tenant_id' } })
    expect(await takeSchemaSnapshot(t.admin)).toEqual(before)
  })

  it('the audit trail is not dropped while it has rows, unless forced', async () => {
    const t = await legacyDb()
    await migrateToLatest(t.admin, { appRole })
    await sql`insert into audit_logs (tenant_id, action) values (${SEED_ID}, 'x')`.execute(t.admin)
    // First the hash chain (0011), then the table (0006): each refuses while it holds rows.
    await migrateDown(t.admin, { to: '0011_tamper_evident_audit' })
    const chained = await takeSchemaSnapshot(t.admin)
    expect(await migrateDown(t.admin)).toMatchObject({ status: 'error', error: { message: expect.stringMatching(/drops the audit trail's hash chain/) } })
    expect(await takeSchemaSnapshot(t.admin)).toEqual(chained)
    await migrateDown(t.admin, { to: '0006_create_audit_logs', allowDataLoss: true })
    const before = await takeSchemaSnapshot(t.admin)
    expect(await migrateDown(t.admin)).toMatchObject({ status: 'error', error: { message: expect.stringMatching(/deletes the audit trail/) } })
    expect(await takeSchemaSnapshot(t.admin)).toEqual(before)
    expect(await migrateDown(t.admin, { allowDataLoss: true })).toMatchObject({ status: 'applied' })
  })
})
