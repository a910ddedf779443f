import { sql, type Kysely } from 'kysely'
import { appRoleName, namedOldAppRoles } from '../online/roles.ts'
import { escapeRoutes } from './app-role-check.ts'

/** The oldest major the migrations run on: 0005 uses ON DELETE SET NULL (column list), new in 15. */
export const MIN_SERVER_VERSION = 150000

export class PreflightRefused extends Error {
  override name = 'PreflightRefused'
}

/**
 * Refuses, before anything is changed, a target the migrations would fail on halfway or leave
 * unsafe: an old server, a read-only one, a role that cannot act as the tables' owner, cannot create
 * what the migrations create, or an application role that row security could not confine.
 * Two round trips on an up-to-date database: every app boot pays them.
 */
export async function preflight(conn: Kysely<any>): Promise<void> {
  const { rows } = await sql<{
    version: number; versionText: string; ro: string; standby: boolean; me: string; db: string
    super: boolean; createrole: boolean; foreignOwners: string | null; tables: number
    needsSchema: boolean; canCreateSchema: boolean; canCreateInPublic: boolean
  }>`
    select pg_catalog.current_setting('server_version_num')::int as version,
      pg_catalog.current_setting('server_version') as "versionText",
      pg_catalog.current_setting('transaction_read_only') as ro, pg_catalog.pg_is_in_recovery() as standby,
      current_user as me, pg_catalog.current_database() as db,
      r.rolsuper or r.rolbypassrls as super, r.rolcreaterole as createrole,
      (select pg_catalog.string_agg(distinct pg_catalog.pg_get_userbyid(c.relowner), ', ') from pg_catalog.pg_class c
        where c.relnamespace = n.oid and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')
          and not pg_catalog.pg_has_role(c.relowner, 'USAGE')) as "foreignOwners",
      (select pg_catalog.count(*)::int from pg_catalog.pg_class c where c.relnamespace = n.oid and c.relkind in ('r', 'p')) as tables,
      pg_catalog.to_regnamespace('skills_db') is null as "needsSchema",
      pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CREATE') as "canCreateSchema",
      n.oid is not null and pg_catalog.has_schema_privilege(n.oid, 'CREATE') as "canCreateInPublic"
    from pg_catalog.pg_roles r left join pg_catalog.pg_namespace n on n.nspname = 'public'
    where r.rolname = current_user`.execute(conn)
  const r = rows[0]!
  if (r.version < MIN_SERVER_VERSION) {
    refuse(`PostgreSQL ${r.versionText.split(' ')[0]} found; skills-db needs PostgreSQL 15 or later: nothing was changed`)
  }
  if (r.ro === 'on' || r.standby) {
    refuse(`the database is read-only (${r.standby ? 'a standby' : 'default_transaction_read_only is on'}): nothing was changed; point the migrator at the writable primary`)
  }
  if (!r.super) {
    if (r.foreignOwners) {
      refuse(`migrations must run as the owner of the tables or a superuser, and ${r.me} cannot act as ${r.foreignOwners}: nothing was changed; connect as ${r.foreignOwners.split(', ')[0]}, or GRANT ${r.foreignOwners.split(', ')[0]} TO ${r.me}`)
    }
    if (r.needsSchema && !r.canCreateSchema) {
      refuse(`${r.me} cannot create the migrator's schema skills_db in database ${r.db}: nothing was changed; GRANT CREATE ON DATABASE ${r.db} TO ${r.me}, or connect as the database owner`)
    }
    if (r.tables === 0 && !r.canCreateInPublic) {
      refuse(`${r.me} cannot create tables in schema public: nothing was changed; GRANT CREATE ON SCHEMA public TO ${r.me}, or connect as the database owner`)
    }
  }
  await checkRoles(conn, { me: r.me, canCreateRoles: r.super || r.createrole })
}

async function checkRoles(conn: Kysely<any>, { me, canCreateRoles }: { me: string; canCreateRoles: boolean }): Promise<void> {
  const appRole = await appRoleName(conn)
  const oldAppRoles = await namedOldAppRoles(conn)
  const { rows } = await sql<{ name: string }>`
    select rolname as name from pg_catalog.pg_roles where rolname = any(${[appRole, ...oldAppRoles]}::text[])`.execute(conn)
  const existing = new Set(rows.map((x) => x.name))
  const missing = [appRole, ...oldAppRoles].filter((role) => !existing.has(role))
  if (missing.length > 0 && !canCreateRoles) {
    refuse(`${me} cannot create role ${missing[0]} (it has no CREATEROLE): nothing was changed; create it first (CREATE ROLE ${missing[0]} LOGIN), or run as a role with CREATEROLE`)
  }
  if (existing.has(appRole)) {
    const escape = await escapeRoutes(conn, appRole)
    if (escape) refuse(`the application role ${appRole} ${escape}, so row-level security would not hold it: nothing was changed; ${escapeFix(appRole, escape)}`)
  }
  for (const role of oldAppRoles.filter((x) => existing.has(x))) {
    const { rows: attrs } = await sql<{ unconfined: boolean }>`
      select rolsuper or rolbypassrls as unconfined from pg_catalog.pg_roles where rolname = ${role}`.execute(conn)
    if (attrs[0]?.unconfined) {
      refuse(`the old app's role ${role} is a superuser or has BYPASSRLS, so it cannot be confined to the default tenant: nothing was changed; name a role without them (a new name is created for you)`)
    }
  }
}

function escapeFix(role: string, escape: string): string {
  if (escape.startsWith('is a superuser')) return `ALTER ROLE ${role} NOSUPERUSER, or pick another application role`
  if (escape.startsWith('has BYPASSRLS')) return `ALTER ROLE ${role} NOBYPASSRLS, or pick another application role`
  if (escape.startsWith('is a member')) return `REVOKE that membership from ${role}, or pick another application role`
  return `give those objects another owner (ALTER … OWNER TO) or pick another application role`
}

function refuse(message: string): never {
  throw new PreflightRefused(message)
}
