import { sql, type Kysely } from 'kysely'

/** One way a role could step past row security, and what the operator should change. */
export interface EscapeRoute {
  how: string
  fix: string
}

/**
 * How `role` could step past row security, or undefined when it cannot:
 * - as a superuser, BYPASSRLS, REPLICATION (a base backup copies every row) or CREATEROLE role
 *   (on PostgreSQL 15 it can grant itself membership in the owner), or a member (at any depth, with
 *   or without INHERIT: SET ROLE suffices) of one;
 * - as a member of pg_read_server_files, pg_write_server_files or pg_execute_server_program (COPY
 *   from a file or program reaches the server's own connection, as a superuser);
 * - as the owner of an object of this database, or a member of that owner: an owner can switch row
 *   security off, or redefine what the policies call (its own temporary objects do not count);
 * - as a member of one of `confinedRoles`, whose policies and privileges it would take on.
 */
export async function escapeRoutes(db: Kysely<any>, role: string, confinedRoles: readonly string[] = []): Promise<EscapeRoute | undefined> {
  const { rows } = await sql<{ attr: string | null; via: string | null; files: string | null; owns: string | null; confined: string | null }>`
    select
      case when r.rolsuper then 'SUPERUSER' when r.rolbypassrls then 'BYPASSRLS' when r.rolreplication then 'REPLICATION'
        when r.rolcreaterole then 'CREATEROLE' end as attr,
      (select pg_catalog.string_agg(x.rolname, ', ' order by x.rolname) from pg_catalog.pg_roles x
        where (x.rolsuper or x.rolbypassrls or x.rolreplication or x.rolcreaterole) and x.oid <> r.oid
          and pg_catalog.pg_has_role(r.oid, x.oid, 'MEMBER')) as via,
      (select pg_catalog.string_agg(x.rolname, ', ' order by x.rolname) from pg_catalog.pg_roles x
        where x.rolname in ('pg_read_server_files', 'pg_write_server_files', 'pg_execute_server_program')
          and pg_catalog.pg_has_role(r.oid, x.oid, 'MEMBER')) as files,
      (select pg_catalog.string_agg(pg_catalog.pg_get_userbyid(o.owner), ', ' order by pg_catalog.pg_get_userbyid(o.owner)) from (
          select c.relowner as owner from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
            where n.nspname not like 'pg\\_temp\\_%' and n.nspname not like 'pg\\_toast\\_temp\\_%'
          union select p.proowner from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
            where n.nspname not like 'pg\\_temp\\_%'
          union select nspowner from pg_catalog.pg_namespace where nspname not like 'pg\\_temp\\_%' and nspname not like 'pg\\_toast\\_temp\\_%'
          union select t.typowner from pg_catalog.pg_type t join pg_catalog.pg_namespace n on n.oid = t.typnamespace
            where n.nspname not like 'pg\\_temp\\_%' and n.nspname not like 'pg\\_toast\\_temp\\_%'
          union select datdba from pg_catalog.pg_database where datname = pg_catalog.current_database()
        ) o where pg_catalog.pg_has_role(r.oid, o.owner, 'MEMBER')) as owns,
      (select pg_catalog.string_agg(x.rolname, ', ' order by x.rolname) from pg_catalog.pg_roles x
        where x.rolname = any(${[...confinedRoles]}::text[]) and x.oid <> r.oid and pg_catalog.pg_has_role(r.oid, x.oid, 'MEMBER')) as confined
    from pg_catalog.pg_roles r where r.rolname = ${role}`.execute(db)
  const r = rows[0]
  if (!r) return undefined
  if (r.attr) return { how: `has ${r.attr}`, fix: `ALTER ROLE ${role} NO${r.attr}, or pick another role` }
  if (r.via) return { how: `is a member of ${r.via} (a superuser, BYPASSRLS, REPLICATION or CREATEROLE role)`, fix: `REVOKE ${r.via.split(', ')[0]} FROM ${role}, or pick another role` }
  if (r.files) return { how: `is a member of ${r.files}, which reach the server's files and programs`, fix: `REVOKE ${r.files.split(', ')[0]} FROM ${role}, or pick another role` }
  if (r.owns === role) return { how: 'owns objects in this database', fix: `give them another owner (REASSIGN OWNED BY ${role} TO <the owner>), or pick another role` }
  if (r.owns) return { how: `owns objects in this database (through ${r.owns})`, fix: `REVOKE ${r.owns.split(', ')[0]} FROM ${role}, or pick another role` }
  if (r.confined) return { how: `is a member of the old app's role ${r.confined}`, fix: `REVOKE ${r.confined.split(', ')[0]} FROM ${role}, or pick another role` }
  return undefined
}
