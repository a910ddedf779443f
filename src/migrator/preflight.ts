import { sql, type Kysely } from 'kysely'
import { appRoleName } from '../online/app-role.ts'
import { namedOldAppRoles, oldAppRoles } from '../online/old-app-roles.ts'
import { escapeRoutes } from './app-role-check.ts'
import { readAppliedMigrations } from './migration-table.ts'

/** The migration that takes TEMPORARY on the database from PUBLIC. */
const TEMPORARY_TAKEN_BY = '0012_app_role_limits'

/** The oldest major the migrations run on: 0005 uses ON DELETE SET NULL (column list), new in 15. */
const MIN_SERVER_VERSION = 150000

/** The server or a role is not fit for the run; thrown before anything changes. */
export class PreflightRefused extends Error {
  /** Always `'PreflightRefused'`, so a log line or a check of `error.name` tells it apart. */
  override name = 'PreflightRefused'
}

/**
 * Refuses, before anything is changed, a target the migrations would fail on halfway or leave
 * unsafe: an old server, a read-only one, a role that cannot act as the tables' owner or create what
 * the migrations create, functions or operators in `public` that another role planted where our
 * statements could call them, and an application or old-app role that row security could not
 * confine. A handful of catalog queries: every app boot pays them (a few ms; see the bench).
 */
export async function preflight(conn: Kysely<any>, { upward = true }: { upward?: boolean } = {}): Promise<void> {
  const { rows } = await sql<{
    version: number; versionText: string; ro: string; standby: boolean; me: string; db: string
    super: boolean; createrole: boolean; foreignOwners: string | null; tables: number
    needsSchema: boolean; canCreateSchema: boolean; canCreateInPublic: boolean
    publicOpen: boolean; publicOwner: string | null; dbOwner: string; canAlterPublic: boolean; planted: string | null
    publicTemp: boolean; canRevokeTemp: boolean
  }>`
    select pg_catalog.current_setting('server_version_num')::int as version,
      pg_catalog.current_setting('server_version') as "versionText",
      pg_catalog.current_setting('transaction_read_only') as ro, pg_catalog.pg_is_in_recovery() as standby,
      current_user as me, pg_catalog.current_database() as db,
      r.rolsuper as super, r.rolcreaterole as createrole,
      (select pg_catalog.string_agg(distinct pg_catalog.pg_get_userbyid(c.relowner), ', ') from pg_catalog.pg_class c
        where c.relnamespace = n.oid and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')
          and not pg_catalog.pg_has_role(c.relowner, 'USAGE')
          and not exists (select 1 from pg_catalog.pg_depend d where d.classid = 'pg_catalog.pg_class'::regclass and d.objid = c.oid and d.deptype = 'e')) as "foreignOwners",
      (select pg_catalog.count(*)::int from pg_catalog.pg_class c where c.relnamespace = n.oid and c.relkind in ('r', 'p')) as tables,
      pg_catalog.to_regnamespace('skills_db') is null as "needsSchema",
      pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CREATE') as "canCreateSchema",
      n.oid is not null and pg_catalog.has_schema_privilege(n.oid, 'CREATE') as "canCreateInPublic",
      exists (select 1 from pg_catalog.aclexplode(n.nspacl) a where a.grantee = 0 and a.privilege_type = 'CREATE') as "publicOpen",
      pg_catalog.pg_get_userbyid(n.nspowner) as "publicOwner",
      (select pg_catalog.pg_get_userbyid(d.datdba) from pg_catalog.pg_database d where d.datname = pg_catalog.current_database()) as "dbOwner",
      r.rolsuper or pg_catalog.pg_has_role(n.nspowner, 'USAGE') as "canAlterPublic",
      pg_catalog.has_database_privilege('public', pg_catalog.current_database(), 'TEMPORARY') as "publicTemp",
      r.rolsuper or (select pg_catalog.pg_has_role(d.datdba, 'USAGE') from pg_catalog.pg_database d where d.datname = pg_catalog.current_database()) as "canRevokeTemp",

      -- Our statements (and Kysely's) call pg_catalog functions and operators unqualified: a lookalike
      -- in public, owned by a role other than a superuser or us, could win on argument types and run
      -- as us. Refused, not ignored: revoking CREATE later does not remove what was planted.
      (select pg_catalog.string_agg(x.what, '; ' order by x.what) from (
          -- format(), not ||: this query must not itself call an operator someone planted.
          select pg_catalog.format('function public.%s(%s) of %s', p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid),
              pg_catalog.pg_get_userbyid(p.proowner)) as what, p.proowner as owner
            from pg_catalog.pg_proc p where p.pronamespace = n.oid
              and exists (select 1 from pg_catalog.pg_proc c where c.pronamespace = 'pg_catalog'::regnamespace and c.proname = p.proname)
          union all
          select pg_catalog.format('operator public.%s of %s', o.oprname, pg_catalog.pg_get_userbyid(o.oprowner)), o.oprowner
            from pg_catalog.pg_operator o where o.oprnamespace = n.oid
        ) x join pg_catalog.pg_roles w on w.oid = x.owner
        where not w.rolsuper and w.rolname <> current_user) as planted
    from pg_catalog.pg_roles r left join pg_catalog.pg_namespace n on n.nspname = 'public'
    where r.rolname = current_user`.execute(conn)
  const r = rows[0]!
  if (r.version < MIN_SERVER_VERSION) {
    refuse(`PostgreSQL ${r.versionText.split(' ')[0]} found; skills-db needs PostgreSQL 15 or later: nothing was changed`)
  }
  if (r.ro === 'on' || r.standby) {
    refuse(`the database is read-only (${r.standby ? 'a standby' : 'default_transaction_read_only is on'}): nothing was changed; point the migrator at the writable primary`)
  }
  if (!r.publicOwner) {
    // As PG 15 makes it: the app role needs USAGE on it, which the migrations do not grant.
    refuse(`schema public does not exist in database ${r.db}, and the migrations create tables and functions there: nothing was changed; as ${r.dbOwner}, run  CREATE SCHEMA public AUTHORIZATION pg_database_owner; GRANT USAGE ON SCHEMA public TO PUBLIC;  then run again`)
  }
  // Who can change public's privileges: its owner, or for pg_database_owner (not a login role) the database's.
  const publicAdmin = r.publicOwner === 'pg_database_owner' ? r.dbOwner : r.publicOwner
  if (!r.super) {
    if (r.foreignOwners) {
      refuse(`migrations must run as the owner of the tables or a superuser, and ${r.me} cannot act as ${r.foreignOwners}: nothing was changed; connect as ${r.foreignOwners.split(', ')[0]}, or GRANT ${r.foreignOwners.split(', ')[0]} TO ${r.me}`)
    }
    if (r.needsSchema && !r.canCreateSchema) {
      refuse(`${r.me} cannot create the migrator's schema skills_db in database ${r.db}: nothing was changed; GRANT CREATE ON DATABASE ${r.db} TO ${r.me}, or connect as the database owner`)
    }
    // Not only on a fresh database: 0002 and 0005–0010 create or replace tables and functions in
    // public, up and down, and CREATE OR REPLACE FUNCTION wants CREATE on the schema even for a
    // function the role owns. Without it a run failed halfway, in Postgres' words. Checked on every
    // run, as the rest is: a migrator that lost it cannot apply the next migration either.
    if (!r.canCreateInPublic) {
      // Only where public belongs to pg_database_owner (PG 15 and later) does owning the database give it.
      refuse(`${r.me} cannot create in schema public, where the migrations create tables and functions: nothing was changed; as ${publicAdmin}, run  GRANT CREATE ON SCHEMA public TO ${r.me};  then run again${r.publicOwner === 'pg_database_owner' ? ` (or connect as ${r.dbOwner})` : ''}`)
    }
  }
  if (r.planted) {
    refuse(`schema public holds what another role could have planted to run as ${r.me}: ${r.planted}; nothing was changed; drop them (or, if you trust them, ALTER … OWNER TO ${r.me}), then run again`)
  }
  // 0012 takes TEMPORARY on the database from PUBLIC (the app role must not flood the lock table
  // with temporary objects); only the database's owner can.
  if (upward && r.publicTemp && !r.canRevokeTemp && !(await readAppliedMigrations(conn)).some((m) => m.name === TEMPORARY_TAKEN_BY)) {
    refuse(`every role may create temporary tables in database ${r.db}, and ${r.me} cannot revoke that (the database belongs to ${r.dbOwner}); the migrations take it from PUBLIC, so that the app role cannot: nothing was changed; as ${r.dbOwner}, run  REVOKE TEMPORARY ON DATABASE ${r.db} FROM PUBLIC; GRANT TEMPORARY ON DATABASE ${r.db} TO ${r.me};  (and to the roles that use temporary tables), then run again`)
  }
  if (r.publicOpen && !r.canAlterPublic) {
    refuse(`every role may create objects in schema public, and ${r.me} cannot revoke that (the schema belongs to ${r.publicOwner}): nothing was changed; as ${publicAdmin}, run  REVOKE CREATE ON SCHEMA public FROM PUBLIC; GRANT CREATE ON SCHEMA public TO ${r.me};  then run again`)
  }
  await checkRoles(conn, { me: r.me, canCreateRoles: r.super || r.createrole })
}

async function checkRoles(conn: Kysely<any>, { me, canCreateRoles }: { me: string; canCreateRoles: boolean }): Promise<void> {
  // (A role name that cannot be used throws RoleNameError: a preflight refusal too, see migration-error.ts.)
  const appRole = await appRoleName(conn)
  const oldAppNames = await namedOldAppRoles(conn)
  const { rows } = await sql<{ name: string }>`
    select rolname as name from pg_catalog.pg_roles where rolname = any(${[appRole, ...oldAppNames]}::text[])`.execute(conn)
  const existing = new Set(rows.map((x) => x.name))
  const missing = [appRole, ...oldAppNames].filter((role) => !existing.has(role))
  if (missing.length > 0 && !canCreateRoles) {
    refuse(`${me} cannot create role ${missing[0]} (it has no CREATEROLE): nothing was changed; create it first (CREATE ROLE ${missing[0]} LOGIN), or run as a role with CREATEROLE`)
  }
  const confined = await oldAppRoles(conn)
  if (existing.has(appRole)) {
    const escape = await escapeRoutes(conn, appRole, [...confined, ...oldAppNames])
    if (escape) refuse(`the application role ${appRole} ${escape.how}, so row-level security would not hold it: nothing was changed; ${escape.fix}`)
  }
  for (const role of oldAppNames.filter((x) => existing.has(x))) {
    const escape = await escapeRoutes(conn, role)
    // An old-app role may own the tables (the owner is confined too); anything else that escapes may not.
    if (escape && !escape.how.startsWith('owns objects')) {
      refuse(`the old app's role ${role} ${escape.how}, so it cannot be confined to the default tenant: nothing was changed; ${escape.fix} (a name that does not exist yet is created for you)`)
    }
  }
}

function refuse(message: string): never {
  throw new PreflightRefused(message)
}
