import { sql, type Kysely } from 'kysely'
import { beforeAll, describe, expect, inject, it } from 'vitest'
import type { DB } from '../src/db-types.ts'
import { useTestDatabase } from './support/database.ts'
import { effectivePrivileges } from './support/effective-privileges.ts'
import { A, B, seedTwoTenants } from './support/tenants.ts'

/**
 * What the application role may do, as docs/security.md ("The application role") documents it: its effective privileges, as
 * effectivePrivileges() lists them (grants to PUBLIC and through membership included; an object
 * it has nothing on is not listed). Anything else is a finding; a migration that changes what the
 * role may do changes its line here.
 */
const DOCUMENTED_PRIVILEGES = [
  'database: CONNECT yes, CREATE no, TEMPORARY no', // 0012: no temporary objects to flood the lock table with
  'function public.audit_logs_append_only(): EXECUTE', // a trigger function: callable only by the trigger machinery
  'function public.audit_signatures_append_only(): EXECUTE', // a trigger function, likewise
  'function tenant_context.challenge(): EXECUTE',
  'function tenant_context.clean_up(): EXECUTE', // 0019: withTenant's clean-up of the caller's own session, in one statement
  'function tenant_context.create_tenant(text, text, text, text, text, text, text, text, text, text): EXECUTE', // 0020: with the tenant key's signature of the request and transaction
  'function tenant_context.current_tenant(): EXECUTE',
  'function tenant_context.end_request(boolean): EXECUTE', // 0019: refuses a COMMIT of a transaction no longer entered
  'function tenant_context.enter(text, text): EXECUTE',
  'function tenant_context.enter(text, text, text): EXECUTE', // 0019: with the session's challenge
  'function tenant_context.finish_request(): EXECUTE', // 0021: end_request(true) without EXECUTE or an exception block
  'function tenant_context.resolve_api_key(text, text): EXECUTE', // 0012: within the tenant a key names
  'function tenant_context.resolve_tenant(text, text): EXECUTE', // 0020: the id and active flag of the slug or domain named, nothing else
  'function tenant_context.session_challenge(): EXECUTE', // 0019: sets the session's counter to a new random value only
  'function tenant_context.set_tenant_active(text, boolean, text): EXECUTE', // 0020: with the tenant key's signature, as create_tenant
  'language plpgsql: USAGE', // for DO blocks (it may create no function: no CREATE on public, no TEMPORARY)
  'language sql: USAGE',
  'role attributes: LOGIN', // NOINHERIT, and a member of no role
  'schema information_schema: USAGE',
  'schema pg_catalog: USAGE',
  'schema public: USAGE',
  'schema tenant_context: USAGE',
  'table public.api_keys: DELETE, INSERT, SELECT, UPDATE',
  'table public.audit_logs: INSERT, SELECT',
  'table public.audit_signatures: INSERT, SELECT',
  'table public.ratings: DELETE, INSERT, SELECT, UPDATE',
  'table public.site_settings: DELETE, INSERT, SELECT, UPDATE',
  'table public.skill_embeddings: DELETE, INSERT, SELECT, UPDATE',
  'table public.skill_reviews: DELETE, INSERT, SELECT, UPDATE',
  'table public.skill_versions: DELETE, INSERT, SELECT, UPDATE',
  'table public.skills: DELETE, INSERT, SELECT, UPDATE',
  'table public.tenants: SELECT',
  'table public.usage_events: DELETE, INSERT, SELECT, UPDATE',
  'table public.users: DELETE, INSERT, SELECT, UPDATE',
]

describe('what the application role cannot do', () => {
  const t = useTestDatabase('migrated')
  let app: Kysely<DB>
  const role = inject('appRole')
  beforeAll(async () => {
    await seedTwoTenants(t.admin)
    app = t.connectAs(role)
  })

  const denied = async (statement: ReturnType<typeof sql>, message: RegExp) => {
    await expect(app.transaction().execute(async (trx) => {
      await sql`select set_config('app.current_tenant_id', ${B}, true)`.execute(trx)
      await statement.execute(trx)
    })).rejects.toThrow(message)
  }

  it('its effective privileges are exactly the documented set', async () => {
    expect(await effectivePrivileges(t.admin, role)).toEqual(DOCUMENTED_PRIVILEGES)
  })

  it('every function it may call either runs as the owner or reads no table: no plan of its own outlives a transaction', async () => {
    // The tenant is a constant in the app role's plans (0008); plans that the role's own calls of an
    // invoker function would cache and reuse in the next transaction would carry the last tenant.
    const { rows } = await sql<{ f: string; definer: boolean }>`
      select n.nspname || '.' || p.proname as f, p.prosecdef as definer from pg_proc p join pg_namespace n on n.oid = p.pronamespace
      where n.nspname not in ('pg_catalog', 'information_schema') and has_function_privilege(${role}, p.oid, 'execute') order by 1`.execute(t.admin)
    expect(rows).toEqual([
      { f: 'public.audit_logs_append_only', definer: false }, // raises, or asks the owner's tenant_being_deleted (0020); reads nothing itself
      { f: 'public.audit_signatures_append_only', definer: false }, // likewise
      { f: 'tenant_context.challenge', definer: false }, // pid and time, reads nothing
      { f: 'tenant_context.clean_up', definer: false }, // utility commands on the caller's session, reads nothing
      { f: 'tenant_context.create_tenant', definer: true },
      { f: 'tenant_context.current_tenant', definer: true },
      { f: 'tenant_context.end_request', definer: false }, // current_tenant() and clean_up(), reads nothing
      { f: 'tenant_context.enter', definer: true },
      { f: 'tenant_context.enter', definer: true },
      { f: 'tenant_context.finish_request', definer: true }, // 0021: the mark and settings, then utility commands on the caller's session
      { f: 'tenant_context.resolve_api_key', definer: true },
      { f: 'tenant_context.resolve_tenant', definer: true },
      { f: 'tenant_context.session_challenge', definer: true },
      { f: 'tenant_context.set_tenant_active', definer: true },
    ])
  })

  it.each([
    ['disable row security', sql`alter table skills disable row level security`, /must be owner of table skills/],
    ['unforce row security', sql`alter table skills no force row level security`, /must be owner of table skills/],
    ['disable the audit triggers', sql`alter table audit_logs disable trigger all`, /must be owner of table audit_logs/],
    ['drop a policy', sql`drop policy tenant_isolation on skills`, /must be owner of (table|relation) skills/],
    ['alter a policy', sql`alter policy tenant_isolation on skills using (true)`, /must be owner of (table|relation) skills/],
    ['create a policy', sql`create policy p on skills using (true)`, /must be owner of table skills/],
    ['become the owner of the tables', sql`set role ${sql.id(inject('ownerRole'))}`, new RegExp(`permission denied to set role "${inject('ownerRole')}"`)],
    ['become a superuser', sql`set role postgres`, /permission denied to set role "postgres"/],
    ['skip triggers', sql`set session_replication_role = replica`, /permission denied to set parameter "session_replication_role"/],
    ['truncate a data table', sql`truncate skills`, /permission denied for table skills/],
    ['truncate tenants', sql`truncate tenants`, /permission denied for table tenants/],
    ['write tenants', sql`update tenants set is_active = false`, /permission denied for table tenants/],
    ['create a table in public', sql`create table public.mine (id int)`, /permission denied for schema public/],
    ['create a function in public', sql`create function public.f() returns int language sql as 'select 1'`, /permission denied for schema public/],
    ['read the migration history', sql`select * from skills_db.kysely_migration`, /permission denied for schema skills_db/],
    ['read Drizzle\'s history or its sequence', sql`select * from drizzle.__drizzle_migrations`, /permission denied for schema drizzle|relation "drizzle.__drizzle_migrations" does not exist/],
    ['replace the API-key resolver', sql`create or replace function public.resolve_api_key(text) returns table (tenant_id text, user_id text) language sql as 'select null::text, null::text'`, /permission denied for schema public|must be owner of function resolve_api_key/],
    ['call the resolver that looks a key hash up in every tenant', sql`select * from public.resolve_api_key('hash-b')`, /permission denied for function resolve_api_key/],
    ['create a temporary table (thousands of them would exhaust the lock table)', sql`create temp table mine (id int)`, /permission denied to create temporary tables in database/],
    ['create a temporary function or type', sql`create domain pg_temp.d as int`, /permission denied to create temporary tables in database|permission denied for schema pg_temp/],
    ['touch the migration lock', sql`select * from skills_db.migration_lock for update`, /permission denied for schema skills_db/],
    ['read the audit chain\'s heads', sql`select * from skills_db.audit_chain_heads`, /permission denied for schema skills_db/],
  ])('cannot %s', async (_label, statement, message) => {
    await denied(statement, message)
  })

  it('turning row_security off does not show other tenants\' rows: the query is refused', async () => {
    await expect(app.transaction().execute(async (trx) => {
      await sql`select set_config('app.current_tenant_id', ${B}, true)`.execute(trx)
      await sql`set local row_security = off`.execute(trx)
      await sql`select count(*) from skills`.execute(trx)
    })).rejects.toThrow(/query would be affected by row-level security policy for table "skills"/)
  })

  it('no view, function or sequence reaches another tenant\'s rows', async () => {
    const { rows } = await sql<{ kind: string; name: string }>`
      select case c.relkind when 'v' then 'view' when 'm' then 'materialized view' when 'S' then 'sequence' end as kind, c.relname as name
      from pg_class c join pg_namespace n on n.oid = c.relnamespace
      where c.relkind in ('v', 'm', 'S') and n.nspname not in ('pg_catalog', 'information_schema')
        and (has_table_privilege(${role}, c.oid, 'select') or (c.relkind = 'S' and has_sequence_privilege(${role}, c.oid, 'usage')))`.execute(t.admin)
    expect(rows).toEqual([])
    // The SECURITY DEFINER functions it may call: the resolvers answer for an exact key hash of the tenant it names, an exact slug or domain, never a pattern.
    const definers = await sql<{ f: string }>`select proname as f from pg_proc where prosecdef and has_function_privilege(${role}, oid, 'execute') order by 1`.execute(t.admin)
    expect(definers.rows.map((r) => r.f)).toEqual(['create_tenant', 'current_tenant', 'enter', 'enter', 'finish_request', 'resolve_api_key', 'resolve_tenant', 'session_challenge', 'set_tenant_active'])
    const found = await sql<{ n: number }>`select count(*)::int as n from tenant_context.resolve_api_key(${B}, '%')
      union all select count(*)::int from tenant_context.resolve_api_key(${B}, 'hash-%') union all select count(*)::int from tenant_context.resolve_api_key('%', 'hash-b')
      union all select count(*)::int from tenant_context.resolve_tenant('%', null) union all select count(*)::int from tenant_context.resolve_tenant(null, '%')
      union all select count(*)::int from tenant_context.resolve_tenant('B', null) union all select count(*)::int from tenant_context.resolve_tenant(' b', null)`.execute(app)
    expect(found.rows).toEqual(Array(7).fill({ n: 0 }))
    const ownTenantOnly = await sql`select count(*)::int as n from skills where tenant_id = ${A}`.execute(app)
    expect(ownTenantOnly.rows).toEqual([{ n: 0 }])
  })
})
