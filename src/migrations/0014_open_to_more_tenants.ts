import { sql, type Kysely, type RawBuilder } from 'kysely'
import { checkConstraint } from '../online/check-constraint.ts'
import { collation } from '../online/collation.ts'
import { index } from '../online/concurrent-index.ts'
import { where } from '../online/conditional-step.ts'
import { DownBlocked, guardDown } from '../online/data-loss-guard.ts'
import { databaseFunction } from '../online/database-function.ts'
import { withLockRetry } from '../online/lock-retry.ts'
import { Refusal } from '../online/refusal.ts'
import { run } from '../online/run-context.ts'
import { withoutStatistics } from '../online/statistics.ts'
import { applySteps, reverse, revertSteps, type Step } from '../online/step.ts'
import { swapPrimaryKey, uniqueKey } from '../online/unique-key.ts'

/**
 * The open phase (`skills-db open`), before a second tenant is created: nothing the app role can
 * observe depends on another tenant's values. An attack review of 13be881 (0010) recovered other tenants'
 * emails, slugs, key hashes and tenant ids as the app role, through:
 * - indexes that do not lead with tenant_id: the policy's tenant condition is then a filter, and
 *   EXPLAIN ANALYZE counts the rows it removes ("Rows Removed by Filter"), idx_tup_read counts what
 *   the index returned, whatever the tenant;
 * - no tenant entered: the policy folded to NULL, and a scan on an index's second column touched
 *   every tenant's entries;
 * - planner statistics gathered from every tenant's rows, which EXPLAIN's estimates reveal;
 * - the owner's all-tenants view, which a setting opened to an old app on the owner role.
 *
 * From here: every index of a table the app role reads leads with tenant_id (tenants: with id), or
 * is built in a collation it cannot name (the single-tenant app's global keys, kept for its
 * uniqueness and ON CONFLICT until the contract phase); with no tenant entered, the policies
 * compare tenant_id with '' (no tenant has that id), which stays an index condition that matches
 * nothing; no column of those tables keeps statistics; the owner's view of every tenant needs a
 * secret the migrator registers while it holds the migration lock.
 *
 * The single-tenant app loses its global lookups: on a confined role it finds its rows through the
 * tenant-leading indexes, its lane's `tenant_id = <default>` being an index condition. A
 * superuser or BYPASSRLS old app would scan: this phase refuses while such a session is connected.
 *
 * It also runs on a database contracted before it was written, where it changes only what is there.
 */
export const phase = 'open'

// Frozen: the tables, columns, keys, function bodies and policies below are this migration's own,
// as of when it was written (see README.md in this folder).
const TEN = [
  'users', 'skills', 'ratings', 'usage_events', 'skill_versions',
  'skill_embeddings', 'skill_reviews', 'api_keys', 'site_settings', 'audit_logs',
] as const
/** The nine tables whose primary key is (id) before the contract phase. */
const ID_KEYED = ['users', 'skills', 'ratings', 'usage_events', 'skill_versions', 'skill_embeddings', 'skill_reviews', 'api_keys'] as const
const INTERNAL = 'skills_db.internal'

/** Whether the single-tenant app's lane is there: before the contract phase. */
async function laneExists(db: Kysely<any>): Promise<boolean> {
  const { rows } = await sql`select 1 from pg_catalog.pg_policy where polname = 'old_app_default_tenant' limit 1`.execute(db)
  return rows.length > 0
}

/** Refused beside sessions row security cannot confine: a single-tenant app among them would lose its global indexes. */
const oldAppConfined: Step = {
  name: 'no unconfined session beside the open phase',
  async up(db) {
    if (run().allowOldAppSessions || !(await laneExists(db))) return
    const { rows } = await sql<{ who: string | null }>`
      select pg_catalog.string_agg(pg_catalog.format('pid %s (%s%s)', a.pid, r.rolname,
          coalesce(', ' || nullif(a.application_name, ''), '')), '; ' order by a.pid) as who
      from pg_catalog.pg_stat_activity a join pg_catalog.pg_roles r on r.oid = a.usesysid
      where a.datname = pg_catalog.current_database() and a.pid <> pg_catalog.pg_backend_pid()
        and exists (select 1 from pg_catalog.pg_roles x where (x.rolsuper or x.rolbypassrls) and pg_catalog.pg_has_role(r.oid, x.oid, 'MEMBER'))`.execute(db)
    if (rows[0]?.who) {
      throw new Refusal('old-app-sessions', `the open phase replaces the single-tenant app's global keys and indexes, and row security cannot confine a superuser or BYPASSRLS session: ${rows[0].who} are connected; ` +
        'a single-tenant app among them would scan its tables and, once another tenant exists, reach it. Move it to a confined role first (README, "Transition")',
      'if none of these sessions is the old app, open again with allowOldAppSessions')
    }
  },
  async down() {},
}

/** 0008's current_tenant(), which gave NULL with no tenant entered. */
const CURRENT_TENANT_0008 = sql`
  create or replace function tenant_context.current_tenant() returns text
  language plpgsql immutable parallel safe security definer
  as $$
  declare
    tenant pg_catalog.text := pg_catalog.current_setting('app.current_tenant_id', true);
  begin
    if pg_catalog.current_setting('tenant_context.entered', true) operator(pg_catalog.=) 'on' then
      if pg_catalog.currval('tenant_context.session_tenant'::pg_catalog.regclass) operator(pg_catalog.=) pg_catalog.hashtextextended(tenant,
           (pg_catalog.date_part('epoch', pg_catalog.now()) operator(pg_catalog.*) 1000000)::pg_catalog.int8) then
        return tenant;
      end if;
    end if;
    return null;
  end $$`

/**
 * With no tenant entered, '' (the CHECKs below keep any tenant from having that id): the policy
 * `tenant_id = ''` stays an index condition, and the scan ends where it starts. NULL folded the
 * policy to a constant the planner kept as a filter, after an index scan on any other condition.
 */
const CURRENT_TENANT_OR_NONE = sql`
  create or replace function tenant_context.current_tenant() returns text
  language plpgsql immutable parallel safe security definer
  as $$
  declare
    tenant pg_catalog.text := pg_catalog.current_setting('app.current_tenant_id', true);
  begin
    if pg_catalog.current_setting('tenant_context.entered', true) operator(pg_catalog.=) 'on' then
      if pg_catalog.currval('tenant_context.session_tenant'::pg_catalog.regclass) operator(pg_catalog.=) pg_catalog.hashtextextended(tenant,
           (pg_catalog.date_part('epoch', pg_catalog.now()) operator(pg_catalog.*) 1000000)::pg_catalog.int8) then
        return tenant;
      end if;
    end if;
    return '';
  end $$`

const currentTenantOrNone: Step = {
  name: 'current_tenant(): \'\' with no tenant entered',
  up: async (db) => void (await CURRENT_TENANT_OR_NONE.execute(db)),
  down: async (db) => void (await CURRENT_TENANT_0008.execute(db)),
}

const ENTERED = sql`tenant_id = tenant_context.current_tenant()`
/** A row with no tenant entered is refused as before: WITH CHECK (… = NULL). */
const ENTERED_TO_WRITE = sql`tenant_id = nullif(tenant_context.current_tenant(), '')`

const alterPolicy = (table: string, name: string, using: RawBuilder<unknown>, check?: RawBuilder<unknown>) => (db: Kysely<any>) =>
  withLockRetry(db, table, async (trx) => {
    const { rows } = await sql`select 1 from pg_catalog.pg_policy where polrelid = ${table}::regclass and polname = ${name}`.execute(trx)
    if (rows.length === 0) return
    await sql`alter policy ${sql.id(name)} on ${sql.table(table)} using (${using}) ${check ? sql`with check (${check})` : sql``}`.execute(trx)
  })

const noTenantMatchesNothing: Step[] = TEN.map((table) => ({
  name: `tenant_isolation on ${table}: '' with no tenant entered`,
  up: alterPolicy(table, 'tenant_isolation', ENTERED, ENTERED_TO_WRITE),
  down: alterPolicy(table, 'tenant_isolation', ENTERED, ENTERED),
}))

/**
 * Tenant-leading replacements of the global lookups, so the single-tenant app (and the app role)
 * find the same rows through indexes that stop at the tenant; the contract phase's own keys, built
 * earlier under the same names.
 */
const tenantLeading: Step[] = [
  index({ table: 'usage_events', name: 'usage_events_tenant_skill_idx', columns: ['tenant_id', 'skill_id'] }),
  index({ table: 'skills', name: 'skills_tenant_author_idx', columns: ['tenant_id', 'author_id'] }),
  index({ table: 'audit_logs', name: 'audit_logs_tenant_actor_idx', columns: ['tenant_id', 'actor_id', 'created_at desc'] }),
  index({ table: 'audit_logs', name: 'audit_logs_tenant_action_idx', columns: ['tenant_id', 'action', 'created_at desc'] }),
  uniqueKey({ table: 'ratings', name: 'ratings_tenant_skill_user_unique', columns: ['tenant_id', 'skill_id', 'user_id'] }),
  uniqueKey({ table: 'skill_versions', name: 'skill_versions_tenant_skill_version_unique', columns: ['tenant_id', 'skill_id', 'version'] }),
  uniqueKey({ table: 'api_keys', name: 'api_keys_tenant_key_hash_unique', columns: ['tenant_id', 'key_hash'] }),
]

async function constraintOn(db: Kysely<any>, table: string, name: string, columns: string[]): Promise<boolean> {
  const { rows } = await sql<{ columns: string[] }>`
    select array(select a.attname::text from unnest(c.conkey) with ordinality k(n, i)
                 join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.n order by k.i) as columns
    from pg_constraint c where c.conrelid = ${table}::regclass and c.conname = ${name}`.execute(db)
  return rows[0]?.columns.join() === columns.join()
}

async function indexExists(db: Kysely<any>, name: string): Promise<boolean> {
  const { rows } = await sql`select 1 from pg_catalog.pg_class where oid = pg_catalog.to_regclass(${`public.${name}`}::text)`.execute(db)
  return rows.length > 0
}

const internal = (table: string, name: string, columns: string[]) => index({ table, name, columns, unique: true, collate: INTERNAL })

/**
 * The single-tenant app's global keys (before the contract phase): each keeps its uniqueness in an
 * index of the internal collation (ON CONFLICT (id) and (skill_id, user_id) still find it), built
 * before the key it replaces goes. Primary keys become (tenant_id, id), as the contract phase has
 * them. (skill_id, version) has an integer column, which any collation leaves usable: it becomes
 * per tenant, the same rule (a skill's versions are all of its tenant), and ON CONFLICT must name
 * (tenant_id, skill_id, version).
 */
const globalKeys: Step[] = [
  ...ID_KEYED.map((table) => where(`0014 ${table} primary key`, (db) => constraintOn(db, table, `${table}_pkey`, ['id']), [
    internal(table, `${table}_id_any_tenant`, ['id']),
    swapPrimaryKey({ table, name: `${table}_pkey`, from: ['id'], to: ['tenant_id', 'id'] }),
  ])),
  where('0014 audit_logs primary key', (db) => constraintOn(db, 'audit_logs', 'audit_logs_pkey', ['id']), [
    swapPrimaryKey({ table: 'audit_logs', name: 'audit_logs_pkey', from: ['id'], to: ['tenant_id', 'id'] }),
  ]),
  where('0014 ratings global key', (db) => constraintOn(db, 'ratings', 'ratings_skill_id_user_id_unique', ['skill_id', 'user_id']), [
    internal('ratings', 'ratings_skill_user_any_tenant', ['skill_id', 'user_id']),
    reverse(uniqueKey({ table: 'ratings', name: 'ratings_skill_id_user_id_unique', columns: ['skill_id', 'user_id'] })),
  ]),
  where('0014 skill_versions global key', (db) => constraintOn(db, 'skill_versions', 'skill_versions_skill_id_version_unique', ['skill_id', 'version']), [
    reverse(uniqueKey({ table: 'skill_versions', name: 'skill_versions_skill_id_version_unique', columns: ['skill_id', 'version'] })),
  ]),
  where('0014 api_keys global key', (db) => constraintOn(db, 'api_keys', 'api_keys_key_hash_unique', ['key_hash']), [
    internal('api_keys', 'api_keys_key_hash_any_tenant', ['key_hash']),
    reverse(uniqueKey({ table: 'api_keys', name: 'api_keys_key_hash_unique', columns: ['key_hash'] })),
  ]),
  // A tenant's slug stays unique across tenants for good: only the owner's functions look it up.
  where('0014 tenants slug key', (db) => constraintOn(db, 'tenants', 'tenants_slug_key', ['slug']), [
    internal('tenants', 'tenants_slug_unique_internal', ['slug']),
    reverse(uniqueKey({ table: 'tenants', name: 'tenants_slug_key', columns: ['slug'] })),
  ]),
]

/** The global lookups, where they are (some only before the contract phase, 0010's key hash index only after it). */
const GLOBAL_LOOKUPS = [
  { table: 'skills', name: 'skills_slug_idx', columns: ['slug'] },
  { table: 'users', name: 'users_email_idx', columns: ['email'] },
  { table: 'usage_events', name: 'usage_events_created_at_idx', columns: ['created_at'] },
  { table: 'usage_events', name: 'usage_events_skill_id_idx', columns: ['skill_id'] },
  { table: 'skills', name: 'skills_author_id_idx', columns: ['author_id'] },
  { table: 'audit_logs', name: 'audit_logs_actor_idx', columns: ['actor_id', 'created_at desc'] },
  { table: 'audit_logs', name: 'audit_logs_action_idx', columns: ['action', 'created_at desc'] },
  { table: 'api_keys', name: 'api_keys_key_hash_idx', columns: ['key_hash'] },
]
const globalLookupsGone: Step[] = GLOBAL_LOOKUPS.map((spec) =>
  where(`0014 drop ${spec.name}`, (db) => indexExists(db, spec.name), [reverse(index(spec))]))

/** No tenant, and no audit row, has the id '' that current_tenant() gives with none entered. */
const noEmptyTenant: Step[] = [
  checkConstraint({ table: 'tenants', name: 'tenants_id_not_empty', condition: sql`id <> ''` }),
  checkConstraint({ table: 'audit_logs', name: 'audit_logs_tenant_id_not_empty', condition: sql`tenant_id <> ''` }),
]

const noStatistics: Step[] = [...TEN, 'audit_signatures', 'tenants'].map((table) => withoutStatistics(table))

const selfCheck: Step = {
  name: 'nothing the app role reads leaks another tenant\'s values',
  async up(db) {
    const { rows } = await sql<{ v: string }>`select v from skills_db.side_channel_violations() v`.execute(db)
    if (rows.length > 0) throw new Error(`after 0014, still: ${rows.map((r) => r.v).join('; ')}`)
  },
  async down() {},
}

/**
 * Where the migrator registers, while it holds the migration lock, the hash of a secret only it
 * knows (the same table its lock key lives in; the migrator makes it too, on databases this has
 * not reached yet).
 */
const migrationLock: Step = {
  name: 'table skills_db.migration_lock',
  async up(db) {
    await sql`create table if not exists skills_db.migration_lock (
      only_row boolean primary key default true check (only_row), lock_key bigint not null, view_hash bytea)`.execute(db)
    await sql`insert into skills_db.migration_lock (lock_key) values (7400113650211842) on conflict do nothing`.execute(db)
    await sql`revoke all on skills_db.migration_lock from public`.execute(db)
  },
  // The migrator's own lock lives in it: it stays.
  async down() {},
}

/**
 * The owner's view of every tenant, which a setting opened (any session of the owner could set it,
 * an old app on the owner role included), is now for two kinds of caller only:
 * - the owner's SECURITY DEFINER functions and triggers (the API-key resolver, the audit log's
 *   triggers, the reference clearing), run for a session that is not the owner's: the app role's,
 *   an old app's plain role, a superuser's. Each looks up what its own logic scopes (a row's
 *   tenant, a key's tenant). An old app on the owner role (or a role of the owner's) is the owner
 *   there too, and stays in its lane;
 * - the migrator, while it holds the migration lock: skills_db.maintenance_view holds a secret
 *   whose hash it registered for the run.
 * IMMUTABLE, as current_tenant(): evaluated once, while a statement is planned, so for the old app
 * on the owner role the policies fold to its lane alone, `tenant_id = <default>`, which the
 * tenant-leading indexes serve. The migrator discards its plans when it lets the lock go.
 */
const OWNER_VIEW = databaseFunction({
  signature: 'skills_db.owner_sees_all_tenants()',
  definition: sql`
    create or replace function skills_db.owner_sees_all_tenants() returns boolean
    language plpgsql immutable security definer
    set search_path = pg_catalog, pg_temp
    as $$
    begin
      -- current_user is this function's owner, the tables' owner. Its policies apply to a session of
      -- another role only inside the owner's SECURITY DEFINER code: the app role and the old app's
      -- roles are no members of the owner and cannot SET ROLE to it (a superuser may: it bypasses
      -- row security anyway).
      if (select r.rolsuper from pg_roles r where r.rolname = session_user) or not pg_has_role(session_user, current_user, 'MEMBER') then
        return true;
      end if;
      return exists (select 1 from skills_db.migration_lock l
        where l.view_hash = sha256(convert_to(coalesce(current_setting('skills_db.maintenance_view', true), ''), 'UTF8')));
    end $$`,
})

const OWNER_SETTING = sql`current_setting('skills_db.all_tenants', true) = 'on'`
const OWNER_FUNCTION = sql`skills_db.owner_sees_all_tenants()`
const ownerPolicies: Step[] = [...TEN, 'audit_signatures'].map((table) => ({
  name: `owner_all_tenants on ${table}: the migrator and the owner's functions only`,
  up: alterPolicy(table, 'owner_all_tenants', OWNER_FUNCTION, OWNER_FUNCTION),
  down: alterPolicy(table, 'owner_all_tenants', OWNER_SETTING, OWNER_SETTING),
}))

/** Undoing this brings back what leaks one tenant's values to another: only while there is one tenant. */
const oneTenant = guardDown('a single tenant', async (db) => {
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from tenants`.execute(db)
  if (rows[0]!.n > 1) {
    throw new DownBlocked(`cannot roll back the open phase: the database has ${rows[0]!.n} tenants, and rolling it back brings back the global keys, indexes and statistics through which the app role observes other tenants' values; delete the other tenants first`)
  }
})

export const up = (db: Kysely<any>) => applySteps(db, steps())
export const down = (db: Kysely<any>) => revertSteps(db, steps())

function steps(): Step[] {
  return [
    oldAppConfined,
    collation(INTERNAL, 'C'),
    // Before the CHECKs: altering a column a validated CHECK reads would scan the table under the lock.
    ...noStatistics,
    ...noEmptyTenant,
    currentTenantOrNone,
    ...noTenantMatchesNothing,
    ...tenantLeading,
    ...globalKeys,
    ...globalLookupsGone,
    selfCheck,
    migrationLock,
    OWNER_VIEW,
    ...ownerPolicies,
    oneTenant,
  ]
}
