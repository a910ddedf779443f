import { sql, type Kysely } from 'kysely'
import { analyzed } from '../online/analyze.ts'
import { alterTable } from '../online/alter-table.ts'
import { index } from '../online/concurrent-index.ts'
import { DownBlocked, guardDown } from '../online/data-loss-guard.ts'
import { foreignKey } from '../online/foreign-key.ts'
import { oldAppRoles } from '../online/old-app-roles.ts'
import { policy } from '../online/policy.ts'
import { Refusal } from '../online/refusal.ts'
import { run } from '../online/run-context.ts'
import { applySteps, reverse, revertSteps, type Step } from '../online/step.ts'
import { timestampsWithTimeZone } from '../online/timestamp-zone.ts'
import { trigger } from '../online/trigger.ts'
import { swapPrimaryKey, uniqueKey } from '../online/unique-key.ts'

/**
 * The contract half of the expand/contract change 0002–0009 began, run by the operator once the
 * single-tenant app is retired (`skills-db contract`): `skills-db latest` and `migrateToLatest()`
 * stop before it, and `status` lists it as waiting.
 */
export const phase = 'contract'

// Frozen: the tables, keys, function bodies and defaults below are this migration's own, as of when
// it was written (see README.md in this folder).
const NINE = ['users', 'skills', 'ratings', 'usage_events', 'skill_versions', 'skill_embeddings', 'skill_reviews', 'api_keys', 'site_settings'] as const
const DEFAULT_TENANT_SLUG = 'default'

async function defaultTenantId(db: Kysely<any>): Promise<string> {
  const { rows } = await sql<{ id: string }>`select id from tenants where slug = ${DEFAULT_TENANT_SLUG}`.execute(db)
  if (!rows[0]) throw new Error(`the default tenant (slug 'default') is missing from tenants; 0002_add_tenants creates it: restore that row`)
  return rows[0].id
}

/**
 * The lane comes out from under the old app: refused while a session of one of its roles (or one
 * row security cannot confine, as the tenant guard of 0005 saw them) is connected, other than ours.
 */
const oldAppRetired: Step = {
  name: 'the old app is retired: none of its sessions is connected',
  async up(db) {
    if (run().allowOldAppSessions) return
    const roles = await oldAppRoles(db)
    const { rows } = await sql<{ who: string | null }>`
      select pg_catalog.string_agg(pg_catalog.format('pid %s (%s%s)', a.pid, r.rolname,
          coalesce(', ' || nullif(a.application_name, ''), '')), '; ' order by a.pid) as who
      from pg_catalog.pg_stat_activity a join pg_catalog.pg_roles r on r.oid = a.usesysid
      where a.datname = pg_catalog.current_database() and a.pid <> pg_catalog.pg_backend_pid()
        and (r.rolname = any(${roles}::text[])
          or exists (select 1 from pg_catalog.pg_roles x where (x.rolsuper or x.rolbypassrls) and pg_catalog.pg_has_role(r.oid, x.oid, 'MEMBER')))`.execute(db)
    if (rows[0]?.who) {
      throw new Refusal('old-app-sessions', `the single-tenant app may still be running, and the contract phase takes its lane away: sessions of its roles, or unconfined ones, are connected: ${rows[0].who}. Stop it first`,
        'if none of these sessions is the old app, contract again with allowOldAppSessions')
    }
  },
  async down() {},
}

/** Which timestamp columns become timestamptz (audit_logs.created_at already is). */
const TIMESTAMPS: Record<string, string[]> = {
  users: ['created_at', 'updated_at'],
  skills: ['created_at', 'updated_at'],
  ratings: ['created_at', 'updated_at'],
  usage_events: ['created_at'],
  skill_versions: ['created_at'],
  skill_embeddings: ['created_at', 'updated_at'],
  skill_reviews: ['created_at'],
  api_keys: ['last_used_at', 'expires_at', 'revoked_at', 'created_at'],
  site_settings: ['updated_at'],
  tenants: ['created_at', 'updated_at'],
}
const UTC_NAMES = ['utc', 'etc/utc', 'uct', 'etc/uct', 'gmt', 'etc/gmt', 'gmt0', 'etc/gmt0', 'greenwich', 'etc/greenwich', 'universal', 'etc/universal', 'zulu', 'etc/zulu']

/**
 * Converting without a rewrite reads the stored values as UTC. They were written by now() in the
 * server's time zone, so they are UTC only if that is UTC: refused otherwise, unless the operator
 * says they are (timestampsAreUtc). Values to convert from another zone would need a rewrite.
 */
const timestampsAreUtc: Step = {
  name: 'timestamps are UTC',
  async up(db) {
    if (run().timestampsAreUtc) return
    const { rows } = await sql<{ tz: string; pending: number }>`
      select pg_catalog.current_setting('TimeZone') as tz,
        (select count(*)::int from pg_catalog.pg_attribute a where a.attrelid = 'public.usage_events'::regclass and a.attname = 'created_at'
          and a.atttypid = 'pg_catalog.timestamp'::regtype) as pending`.execute(db)
    const { tz, pending } = rows[0]!
    if (pending === 0 || UTC_NAMES.includes(tz.toLowerCase())) return
    throw new Refusal('timestamps-not-utc', `the server's TimeZone is ${tz}, so the timestamp columns probably hold local times of ${tz}: made timestamptz as UTC, they would shift by its offset, ` +
      'and converting them from another zone would rewrite the tables, which skills-db does not do online', 'if they are UTC anyway, contract again with timestampsAreUtc')
  },
  async down() {},
}

/** The five references that cleared themselves (ON DELETE SET NULL (column)); Citus refuses SET NULL with the distribution key in the key. */
const SET_NULL_REFS = [
  { table: 'skills', column: 'author_id', parent: 'users' },
  { table: 'usage_events', column: 'skill_id', parent: 'skills' },
  { table: 'usage_events', column: 'user_id', parent: 'users' },
  { table: 'skill_versions', column: 'created_by', parent: 'users' },
  { table: 'skill_reviews', column: 'requested_by', parent: 'users' },
] as const

/**
 * Deleting a user or a skill keeps its meaning (references to it are cleared, the rows stay) through
 * a trigger on the parent instead: it clears the references of the deleted row's own tenant before
 * the row goes, and the plain foreign keys that replace the SET NULL ones then find none. SECURITY
 * DEFINER, so its plans are the owner's (the app role's plans carry its tenant, see 0008), with the
 * owner's view of every tenant for the statement; it touches the deleted row's tenant only.
 */
const clearReferencesTo = (parent: 'users' | 'skills') => {
  const refs = SET_NULL_REFS.filter((r) => r.parent === parent)
  const body = refs.map((r) => `update public.${r.table} set ${r.column} = null where tenant_id = old.tenant_id and ${r.column} = old.id;`).join('\n          ')
  return trigger({
    table: parent,
    name: 'clear_references',
    events: 'before delete',
    level: 'row',
    fn: {
      name: `skills_db.${parent}_clear_references`,
      definition: sql`
        create or replace function ${sql.raw(`skills_db.${parent}_clear_references`)}() returns trigger
        language plpgsql security definer
        set search_path = pg_catalog, pg_temp
        as $$
        declare
          was text := current_setting('skills_db.all_tenants', true);
        begin
          perform set_config('skills_db.all_tenants', 'on', true);
          ${sql.raw(body)}
          perform set_config('skills_db.all_tenants', coalesce(was, ''), true);
          return old;
        end $$`,
    },
  })
}

const referencesWithoutSetNull: Step[] = [
  clearReferencesTo('users'),
  clearReferencesTo('skills'),
  ...SET_NULL_REFS.flatMap((r): Step[] => [
    foreignKey({ table: r.table, name: `${r.table}_${r.column}_fk`, columns: ['tenant_id', r.column], references: { table: r.parent, columns: ['tenant_id', 'id'] } }),
    reverse(foreignKey({
      table: r.table, name: `${r.table}_${r.column}_tenant_fk`, columns: ['tenant_id', r.column],
      references: { table: r.parent, columns: ['tenant_id', 'id'] }, onDelete: { setNull: [r.column] },
    })),
  ]),
]

/**
 * Every key includes tenant_id. Primary keys (tenant_id, id): users and skills keep their unique
 * (tenant_id, id) too, the target of the eleven references (moving those onto the new key would
 * rebuild them all in one transaction across seven tables).
 */
const keys: Step[] = [
  ...[...NINE.filter((t) => t !== 'site_settings'), 'audit_logs'].map((table) =>
    swapPrimaryKey({ table, name: `${table}_pkey`, from: ['id'], to: ['tenant_id', 'id'] })),
  uniqueKey({ table: 'ratings', name: 'ratings_tenant_skill_user_unique', columns: ['tenant_id', 'skill_id', 'user_id'] }),
  reverse(uniqueKey({ table: 'ratings', name: 'ratings_skill_id_user_id_unique', columns: ['skill_id', 'user_id'] })),
  uniqueKey({ table: 'skill_versions', name: 'skill_versions_tenant_skill_version_unique', columns: ['tenant_id', 'skill_id', 'version'] }),
  reverse(uniqueKey({ table: 'skill_versions', name: 'skill_versions_skill_id_version_unique', columns: ['skill_id', 'version'] })),
  // resolve_api_key finds a key by its hash before any tenant is known.
  index({ table: 'api_keys', name: 'api_keys_key_hash_idx', columns: ['key_hash'] }),
  uniqueKey({ table: 'api_keys', name: 'api_keys_tenant_key_hash_unique', columns: ['tenant_id', 'key_hash'] }),
  reverse(uniqueKey({ table: 'api_keys', name: 'api_keys_key_hash_unique', columns: ['key_hash'] })),
  // The new primary keys lead with tenant_id: these add nothing now.
  reverse(index({ table: 'ratings', name: 'ratings_tenant_id_idx', columns: ['tenant_id'] })),
  reverse(index({ table: 'skill_versions', name: 'skill_versions_tenant_id_idx', columns: ['tenant_id'] })),
  reverse(index({ table: 'api_keys', name: 'api_keys_tenant_id_idx', columns: ['tenant_id'] })),
]

/** A key hash is unique per tenant only now: two tenants' keys with one hash resolve to nobody. */
const RESOLVER_0007 = sql`
  create or replace function public.resolve_api_key(presented_key_hash text)
  returns table (tenant_id text, user_id text)
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  as $$
  declare
    was text := current_setting('skills_db.all_tenants', true);
  begin
    perform set_config('skills_db.all_tenants', 'on', true);
    return query
      select k.tenant_id, k.user_id from public.api_keys k
      where k.key_hash = presented_key_hash
        and k.revoked_at is null
        and (k.expires_at is null or k.expires_at > now())
        and exists (select 1 from public.tenants t where t.id = k.tenant_id and t.is_active);
    perform set_config('skills_db.all_tenants', coalesce(was, ''), true);
  end $$`
const RESOLVER_ONE_OR_NONE = sql`
  create or replace function public.resolve_api_key(presented_key_hash text)
  returns table (tenant_id text, user_id text)
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  as $$
  declare
    was text := current_setting('skills_db.all_tenants', true);
    found integer;
    found_tenant text;
    found_user text;
  begin
    perform set_config('skills_db.all_tenants', 'on', true);
    select count(*)::int, min(m.tenant_id), min(m.user_id) into found, found_tenant, found_user
    from (select k.tenant_id, k.user_id from public.api_keys k
          where k.key_hash = presented_key_hash
            and k.revoked_at is null
            and (k.expires_at is null or k.expires_at > now())
            and exists (select 1 from public.tenants t where t.id = k.tenant_id and t.is_active)
          limit 2) m;
    perform set_config('skills_db.all_tenants', coalesce(was, ''), true);
    if found = 1 then
      tenant_id := found_tenant;
      user_id := found_user;
      return next;
    end if;
  end $$`
const resolver: Step = {
  name: 'resolve_api_key: one key or none',
  up: async (db) => void (await RESOLVER_ONE_OR_NONE.execute(db)),
  down: async (db) => void (await RESOLVER_0007.execute(db)),
}

/** 0005's lane for the old app, taken away; `down` puts it back for the roles 0005 recorded. */
const TENANT_GUARD_0005 = sql`
  create or replace function skills_db.no_second_tenant_beside_unconfined_sessions() returns trigger
  language plpgsql security definer
  set search_path = pg_catalog, pg_temp
  as $$
  declare
    who text;
  begin
    if coalesce(current_setting('skills_db.unconfined_sessions_ok', true), '') = 'on' then
      return new;
    end if;
    select string_agg(format('pid %s (%s%s)', a.pid, r.rolname, coalesce(', ' || nullif(a.application_name, ''), '')), '; ' order by a.pid)
      into who
    from pg_stat_activity a join pg_roles r on r.oid = a.usesysid
    where a.datname = current_database() and a.pid <> pg_backend_pid()
      -- or able to SET ROLE to one
      and exists (select 1 from pg_roles x where (x.rolsuper or x.rolbypassrls) and pg_has_role(r.oid, x.oid, 'MEMBER'));
    if who is not null then
      raise exception 'refusing to create tenant "%": sessions that row-level security cannot confine are connected: %', new.slug, who
        using errcode = 'object_in_use',
          hint = 'The single-tenant app would reach every tenant as a superuser or BYPASSRLS role: move it to an old-app role (README, "Transition"). '
            || 'If none of these sessions is the old app, set skills_db.unconfined_sessions_ok = on in this transaction.';
    end if;
    return new;
  end $$`

const oldAppLane: Step[] = [
  ...NINE.map((table) => reverse(policy(table, {
    name: 'old_app_default_tenant',
    to: oldAppRoles,
    condition: async (db) => sql`tenant_id = ${sql.lit(await defaultTenantId(db))}`,
  }))),
  reverse(trigger({
    table: 'tenants',
    name: 'no_second_tenant_beside_unconfined_sessions',
    events: 'before insert',
    level: 'row',
    fn: { name: 'skills_db.no_second_tenant_beside_unconfined_sessions', definition: TENANT_GUARD_0005 },
  })),
  // The old app's lookups by slug and by email alone.
  reverse(index({ table: 'skills', name: 'skills_slug_idx', columns: ['slug'] })),
  reverse(index({ table: 'users', name: 'users_email_idx', columns: ['email'] })),
  // A row inserted without a tenant no longer lands in the default tenant: it is refused.
  ...NINE.map((table): Step => ({
    name: `default of ${table}.tenant_id: the entered tenant only`,
    up: (db) => alterTable(db, table, sql`alter column tenant_id set default nullif(current_setting('app.current_tenant_id', true), '')`),
    down: async (db) => alterTable(db, table,
      sql`alter column tenant_id set default coalesce(nullif(current_setting('app.current_tenant_id', true), ''), ${sql.lit(await defaultTenantId(db))})`),
  })),
]

/**
 * timestamptz, so that `created_at > now() - interval '3 days'` compares like with like: timestamptz
 * comparison is leakproof and shares the (tenant_id, created_at) index with the policy, where
 * timestamp against timestamptz was filtered after the scan. usage_events' created_at indexes are
 * rebuilt around the change; its global one, the old app's, is not built again. While the tenant
 * index is rebuilt, a plain tenant_id index serves the tenant's reads.
 */
const timestamps: Step[] = [
  index({ table: 'usage_events', name: 'usage_events_contract_tenant_idx', columns: ['tenant_id'] }),
  reverse(index({ table: 'usage_events', name: 'usage_events_created_at_idx', columns: ['created_at'] })),
  ...Object.entries(TIMESTAMPS).map(([table, columns]) => timestampsWithTimeZone(table, columns, table === 'usage_events'
    ? { indexes: [{ table, name: 'usage_events_tenant_created_at_idx', columns: ['tenant_id', 'created_at'] }] }
    : {})),
  reverse(index({ table: 'usage_events', name: 'usage_events_contract_tenant_idx', columns: ['tenant_id'] })),
]

/** Undoing tenant-inclusive keys rebuilds global ones: values several tenants share would make that fail halfway. */
const globalKeysRestorable = guardDown('global keys can be restored', async (db) => {
  const global: [string, string[]][] = [
    ...[...NINE.filter((t) => t !== 'site_settings'), 'audit_logs'].map((t): [string, string[]] => [t, ['id']]),
    ['ratings', ['skill_id', 'user_id']], ['skill_versions', ['skill_id', 'version']], ['api_keys', ['key_hash']],
  ]
  for (const [table, columns] of global) {
    const { rows } = await sql<{ v: string }>`select concat_ws(', ', ${sql.join(columns.map((c) => sql.ref(c)))}) as v from ${sql.table(table)}
      group by ${sql.join(columns.map((c) => sql.ref(c)))} having count(*) > 1 limit 1`.execute(db)
    if (rows[0]) {
      throw new DownBlocked(`cannot roll back the contract phase: ${table} (${columns.join(', ')}) "${rows[0].v}" is used by several tenants, and must be globally unique again; remove the duplicates first`)
    }
  }
})

const steps: Step[] = [
  oldAppRetired,
  timestampsAreUtc,
  ...keys,
  resolver,
  ...referencesWithoutSetNull,
  ...oldAppLane,
  ...timestamps,
  { ...analyzed([...NINE, 'audit_logs', 'tenants']), name: 'analyze the contracted tables' },
  globalKeysRestorable,
]

export const up = (db: Kysely<any>) => applySteps(db, steps)
export const down = (db: Kysely<any>) => revertSteps(db, steps)
