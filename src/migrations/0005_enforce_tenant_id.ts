import { sql, type Kysely } from 'kysely'
import { index } from '../online/concurrent-index.ts'
import { DownBlocked, guardDown } from '../online/data-loss-guard.ts'
import { databaseFunction } from '../online/database-function.ts'
import { foreignKey, type ForeignKeySpec } from '../online/foreign-key.ts'
import { notNull } from '../online/not-null.ts'
import { revokePublicCreate } from '../online/public-schema.ts'
import { appRole, appRoleName } from '../online/app-role.ts'
import { grant } from '../online/grant.ts'
import { namedOldAppRoles, namedOldAppRolesGranted, oldAppEscapePrivilegesRevoked, oldAppRoles, recordOldAppRoles } from '../online/old-app-roles.ts'
import { progress } from '../online/run-context.ts'
import { ownerIfConfinable } from '../online/table-owner.ts'
import { rowSecurity, type PolicySpec } from '../online/row-security.ts'
import { applySteps, reverse, revertSteps, type Step } from '../online/step.ts'
import { trigger } from '../online/trigger.ts'
import { swapPrimaryKey, uniqueKey } from '../online/unique-key.ts'

// Frozen: the tables, policy conditions, function bodies and grants below are this migration's
// own, as of when it was written. Later code must not change what it does (see README.md in this folder).
const TABLES = [
  'users', 'skills', 'ratings', 'usage_events', 'skill_versions',
  'skill_embeddings', 'skill_reviews', 'api_keys', 'site_settings',
] as const

async function defaultTenantId(db: Kysely<any>): Promise<string> {
  const { rows } = await sql<{ id: string }>`select id from tenants where slug = 'default'`.execute(db)
  if (!rows[0]) throw new Error(`the default tenant (slug 'default') is missing from tenants; 0002_add_tenants creates it: restore that row`)
  return rows[0].id
}

/**
 * Who sees which rows:
 * - everyone (the application role above all): the tenant named by app.current_tenant_id; none when unset;
 * - the single-tenant app's roles (the owner included): the default tenant, so it keeps working and
 *   never sees a tenant created later;
 * - the owner, while skills_db.all_tenants is on: every row. The migrator's session sets it, so its
 *   checks see every row without a superuser; so does resolve_api_key, for its one lookup.
 *   Other roles setting it gain nothing: the policy applies to the owner alone.
 */
const policies = (table: string): PolicySpec[] => [
  // For the application role alone: the old app's roles and the owner cannot switch tenant with set_config.
  { name: 'tenant_isolation', to: async (db) => [await appRoleName(db)], condition: sql`tenant_id = nullif(current_setting('app.current_tenant_id', true), '')` },
  { name: 'old_app_default_tenant', to: oldAppRoles, condition: async (db) => sql`tenant_id = ${sql.lit(await defaultTenantId(db))}` },
  { name: 'owner_all_tenants', to: ownerIfConfinable(table), condition: sql`current_setting('skills_db.all_tenants', true) = 'on'` },
]

/**
 * Who the single-tenant app may connect as, as of this migration: the tables' owner, the roles named
 * for the run, and every LOGIN role that holds privileges on the tables (the app on a plain role).
 * NOLOGIN roles with privileges (group roles; PostgREST's anon and authenticated on Supabase) are
 * left out and named: confined, they would see the default tenant, which row security otherwise hides
 * from them. Superusers and BYPASSRLS roles cannot be confined (see the guard on tenants below).
 */
async function findOldAppRoles(db: Kysely<any>): Promise<string[]> {
  const named = await namedOldAppRoles(db)
  const { rows } = await sql<{ role: string; how: string; confined: boolean }>`
    with candidates as (
      select r.oid, 1 as rank, 'named for this run' as how from pg_catalog.pg_roles r where r.rolname = any(${named}::text[])
      union select c.relowner, 2, 'owner of the tables' from pg_catalog.pg_class c where c.oid = any(${TABLES.map((t) => `public.${t}`)}::regclass[])
      union select a.grantee, 3, 'has privileges on the tables' from pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
        where c.oid = any(${TABLES.map((t) => `public.${t}`)}::regclass[]) and a.grantee not in (0, c.relowner)
          and a.privilege_type in ('SELECT', 'INSERT', 'UPDATE', 'DELETE')
    )
    select distinct on (r.rolname) r.rolname as role, k.how, k.rank < 3 or r.rolcanlogin as confined
    from candidates k join pg_catalog.pg_roles r on r.oid = k.oid
    where not r.rolsuper and not r.rolbypassrls and r.rolname <> ${await appRoleName(db)}
    order by r.rolname, k.rank`.execute(db)
  const confined = rows.filter((r) => r.confined)
  const left = rows.filter((r) => !r.confined)
  progress(`  old app roles, confined to the default tenant: ${confined.map((r) => `${r.role} (${r.how})`).join('; ') || 'none'}`)
  if (left.length > 0) {
    progress(`  not confined, so they see no rows (NOLOGIN, so not the old app; name it as an old-app role if it is): ${left.map((r) => r.role).join(', ')}`)
  }
  return confined.map((r) => r.role)
}

/** The legacy references between data tables; each becomes a composite key that includes tenant_id. */
const REFERENCES: { table: string; column: string; parent: 'users' | 'skills'; onDelete: 'cascade' | 'set null'; legacyName: string }[] = [
  { table: 'skills', column: 'author_id', parent: 'users', onDelete: 'set null', legacyName: 'skills_author_id_users_id_fk' },
  { table: 'ratings', column: 'skill_id', parent: 'skills', onDelete: 'cascade', legacyName: 'ratings_skill_id_skills_id_fk' },
  { table: 'ratings', column: 'user_id', parent: 'users', onDelete: 'cascade', legacyName: 'ratings_user_id_users_id_fk' },
  { table: 'usage_events', column: 'skill_id', parent: 'skills', onDelete: 'set null', legacyName: 'usage_events_skill_id_skills_id_fk' },
  { table: 'usage_events', column: 'user_id', parent: 'users', onDelete: 'set null', legacyName: 'usage_events_user_id_users_id_fk' },
  { table: 'skill_versions', column: 'skill_id', parent: 'skills', onDelete: 'cascade', legacyName: 'skill_versions_skill_id_skills_id_fk' },
  { table: 'skill_versions', column: 'created_by', parent: 'users', onDelete: 'set null', legacyName: 'skill_versions_created_by_users_id_fk' },
  { table: 'skill_embeddings', column: 'skill_id', parent: 'skills', onDelete: 'cascade', legacyName: 'skill_embeddings_skill_id_skills_id_fk' },
  { table: 'skill_reviews', column: 'skill_id', parent: 'skills', onDelete: 'cascade', legacyName: 'skill_reviews_skill_id_skills_id_fk' },
  { table: 'skill_reviews', column: 'requested_by', parent: 'users', onDelete: 'set null', legacyName: 'skill_reviews_requested_by_users_id_fk' },
  { table: 'api_keys', column: 'user_id', parent: 'users', onDelete: 'cascade', legacyName: 'api_keys_user_id_users_id_fk' },
]

/** A unique key that becomes per-tenant: the new one is in place before the global one goes. */
const perTenant = (table: string, column: string, globalName: string, tenantName: string): Step[] => [
  uniqueKey({ table, name: tenantName, columns: ['tenant_id', column] }),
  reverse(uniqueKey({ table, name: globalName, columns: [column] })),
]

const steps: Step[] = [
  // Nobody but its owner may plant objects in public that migrations or SECURITY DEFINER code could
  // pick up. First in 0005; a role that could not do it was refused before the run (preflight).
  revokePublicCreate,
  ...TABLES.map((table) => notNull(table, 'tenant_id')),
  ...TABLES.map((table) =>
    foreignKey({ table, name: `${table}_tenant_id_fk`, columns: ['tenant_id'], references: { table: 'tenants', columns: ['id'] } })),

  // Parents expose (tenant_id, id) so children can reference a row *of their own tenant*.
  uniqueKey({ table: 'users', name: 'users_tenant_id_id_unique', columns: ['tenant_id', 'id'] }),
  uniqueKey({ table: 'skills', name: 'skills_tenant_id_id_unique', columns: ['tenant_id', 'id'] }),
  ...REFERENCES.flatMap((ref): Step[] => {
    const legacy: ForeignKeySpec = {
      table: ref.table, name: ref.legacyName, columns: [ref.column], references: { table: ref.parent, columns: ['id'] }, onDelete: ref.onDelete,
    }
    return [
      foreignKey({
        table: ref.table,
        name: `${ref.table}_${ref.column}_tenant_fk`,
        columns: ['tenant_id', ref.column],
        references: { table: ref.parent, columns: ['tenant_id', 'id'] },
        // SET NULL must clear the reference only: tenant_id stays.
        onDelete: ref.onDelete === 'cascade' ? 'cascade' : { setNull: [ref.column] },
      }),
      reverse(foreignKey(legacy)),
    ]
  }),

  // The single-tenant app looks skills up by slug alone: keep that fast once slug is per tenant.
  index({ table: 'skills', name: 'skills_slug_idx', columns: ['slug'] }),
  ...perTenant('skills', 'slug', 'skills_slug_unique', 'skills_tenant_slug_unique'),
  ...perTenant('skill_embeddings', 'skill_id', 'skill_embeddings_skill_id_unique', 'skill_embeddings_tenant_skill_unique'),
  ...perTenant('skill_reviews', 'skill_id', 'skill_reviews_skill_id_unique', 'skill_reviews_tenant_skill_unique'),
  // A global unique email would tell tenant B, by a duplicate-key error, that an address exists in A.
  index({ table: 'users', name: 'users_email_idx', columns: ['email'] }),
  ...perTenant('users', 'email', 'users_email_unique', 'users_tenant_email_unique'),
  // Each tenant gets its own 'default' settings row.
  swapPrimaryKey({ table: 'site_settings', name: 'site_settings_pkey', from: ['id'], to: ['tenant_id', 'id'] }),

  // Tenant-scoped reads: the policy's tenant_id condition and the query's own filter share one index.
  index({ table: 'usage_events', name: 'usage_events_tenant_created_at_idx', columns: ['tenant_id', 'created_at'] }),
  index({ table: 'skills', name: 'skills_tenant_total_uses_idx', columns: ['tenant_id', 'total_uses'] }),
  index({ table: 'ratings', name: 'ratings_tenant_id_idx', columns: ['tenant_id'] }),
  index({ table: 'skill_versions', name: 'skill_versions_tenant_id_idx', columns: ['tenant_id'] }),
  index({ table: 'api_keys', name: 'api_keys_tenant_id_idx', columns: ['tenant_id'] }),

  // The policies below name it: it exists first.
  appRole,
  namedOldAppRolesGranted(TABLES, ['select', 'insert', 'update', 'delete']),
  recordOldAppRoles(findOldAppRoles),
  oldAppEscapePrivilegesRevoked(TABLES),
  ...TABLES.map((table) => rowSecurity(table, policies(table))),
  grant('tenants', ['select']),
  ...TABLES.map((table) => grant(table, ['select', 'insert', 'update', 'delete'])),
  // The one path from a presented API key to its tenant, for a request that has no tenant yet:
  // an exact, unrevoked, unexpired hash gives only tenant_id and user_id.
  databaseFunction({
    signature: 'public.resolve_api_key(text)',
    executeBy: 'app role',
    definition: sql`
      create or replace function public.resolve_api_key(presented_key_hash text)
      returns table (tenant_id text, user_id text)
      language plpgsql volatile security definer
      set search_path = pg_catalog, pg_temp
      as $$
      declare
        was text := current_setting('skills_db.all_tenants', true);
      begin
        -- Past the owner's own row security, for this lookup only (a function's SET clause may not
        -- name this setting unless a superuser creates the function).
        perform set_config('skills_db.all_tenants', 'on', true);
        return query
          select k.tenant_id, k.user_id from public.api_keys k
          where k.key_hash = presented_key_hash
            and k.revoked_at is null
            and (k.expires_at is null or k.expires_at > now());
        perform set_config('skills_db.all_tenants', coalesce(was, ''), true);
      end $$`,
  }),
  // Row security cannot confine a superuser or BYPASSRLS session. While one is connected, it may be
  // the old app, which would then reach every tenant: refuse to create a second tenant until it is gone.
  trigger({
    table: 'tenants',
    name: 'no_second_tenant_beside_unconfined_sessions',
    events: 'before insert',
    level: 'row',
    fn: {
      name: 'skills_db.no_second_tenant_beside_unconfined_sessions',
      definition: sql`
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
        end $$`,
    },
  }),
  guardDown('global keys can be restored', async (db) => {
    // Undoing per-tenant keys rebuilds the global ones; tenants sharing a value would make that fail halfway.
    for (const [table, column] of [['skills', 'slug'], ['users', 'email'], ['skill_embeddings', 'skill_id'], ['skill_reviews', 'skill_id'], ['site_settings', 'id']] as const) {
      const { rows } = await sql<{ v: string }>`select ${sql.ref(column)}::text as v from ${sql.table(table)} group by 1 having count(*) > 1 limit 1`.execute(db)
      if (rows[0]) {
        throw new DownBlocked(`cannot roll back 0005: ${table}.${column} "${rows[0].v}" is used by several tenants, and ${table}.${column} must be globally unique again; remove the duplicates first`)
      }
    }
  }),
]

export const up = (db: Kysely<any>) => applySteps(db, steps)
export const down = (db: Kysely<any>) => revertSteps(db, steps)
