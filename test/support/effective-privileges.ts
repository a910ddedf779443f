import { sql, type Kysely } from 'kysely'

/**
 * What `role` may do in this database, as PostgreSQL decides it: has_*_privilege() for every
 * object of the schemas outside pg_catalog and information_schema, so grants to PUBLIC and grants
 * through role membership count, not only the role's own ACL entries. One readable line per object
 * it has anything on (`table public.skills: DELETE, INSERT, SELECT, UPDATE`), sorted:
 *
 * - the database, with CONNECT, CREATE and TEMPORARY each named with its value (they come from
 *   PUBLIC by default and are easy to overlook);
 * - schemas (USAGE, CREATE), the session's temporary ones aside;
 * - tables, views, materialized and foreign tables (every table privilege of the server's major),
 *   sequences (USAGE, SELECT, UPDATE), and columns it has a privilege on that its table does not
 *   give (a column-level grant);
 * - functions and procedures (EXECUTE), and the system functions PostgreSQL keeps from PUBLIC
 *   (those with an ACL of their own: pg_read_file, lo_import, …);
 * - the system tables that hold secrets or other tenants' values (pg_authid, pg_statistic, …);
 * - types of those schemas other than tables' row types and arrays, trusted languages, foreign-data
 *   wrappers and servers, tablespaces, parameters (GRANT SET ON PARAMETER), large objects;
 * - default privileges (pg_default_acl) that give anything to the role, to PUBLIC, or to a role it
 *   is a member of: whatever a later CREATE would hand it;
 * - its attributes, and every role it is a member of, at any depth.
 */
export async function effectivePrivileges(db: Kysely<any>, role: string): Promise<string[]> {
  const { rows } = await sql<{ object: string; privilege: string }>`
    with
      table_privileges(p) as (select unnest(array['SELECT', 'INSERT', 'UPDATE', 'DELETE', 'TRUNCATE', 'REFERENCES', 'TRIGGER']
        -- PostgreSQL 17 added MAINTAIN; asking an older server for it is an error.
        || case when current_setting('server_version_num')::int >= 170000 then array['MAINTAIN'] else array[]::text[] end)),
      user_schemas as (select oid, nspname from pg_namespace
        where nspname not in ('pg_catalog', 'information_schema') and nspname !~ '^pg_(toast|temp_|toast_temp_)'),
      relations as (select c.oid, c.relkind, n.nspname || '.' || c.relname as name from pg_class c join user_schemas n on n.oid = c.relnamespace
        where c.relkind in ('r', 'p', 'v', 'm', 'f', 'S'))
    select 'database: ' || string_agg(p || case when has_database_privilege(${role}, current_database(), p) then ' yes' else ' no' end, ', ' order by p) as object,
      null as privilege
    from unnest(array['CONNECT', 'CREATE', 'TEMPORARY']) p
    union all
    select 'schema ' || n.nspname, p from pg_namespace n, unnest(array['USAGE', 'CREATE']) p
    where n.nspname !~ '^pg_(temp_|toast_temp_)' and has_schema_privilege(${role}, n.oid, p)
    union all
    select case r.relkind when 'v' then 'view ' when 'm' then 'materialized view ' when 'f' then 'foreign table ' else 'table ' end || r.name, p
    from relations r, table_privileges t(p) where r.relkind <> 'S' and has_table_privilege(${role}, r.oid, p)
    union all
    select 'sequence ' || r.name, p from relations r, unnest(array['USAGE', 'SELECT', 'UPDATE']) p
    where r.relkind = 'S' and has_sequence_privilege(${role}, r.oid, p)
    union all
    select 'column ' || r.name || '.' || a.attname, p
    from relations r join pg_attribute a on a.attrelid = r.oid and a.attnum > 0 and not a.attisdropped,
      unnest(array['SELECT', 'INSERT', 'UPDATE', 'REFERENCES']) p
    where r.relkind <> 'S' and has_column_privilege(${role}, r.oid, a.attnum, p) and not has_table_privilege(${role}, r.oid, p)
    union all
    select 'function ' || f.pronamespace::regnamespace::text || '.' || f.proname
        || '(' || array_to_string(array(select format_type(t, null) from unnest(f.proargtypes::oid[]) with ordinality a(t, i) order by i), ', ') || ')', 'EXECUTE'
    from pg_proc f
    where (f.pronamespace in (select oid from user_schemas) or (f.pronamespace = 'pg_catalog'::regnamespace and f.proacl is not null))
      and has_function_privilege(${role}, f.oid, 'EXECUTE')
    union all
    select 'table pg_catalog.' || c.relname, p
    from pg_class c, table_privileges t(p)
    where c.oid in ('pg_catalog.pg_authid'::regclass, 'pg_catalog.pg_statistic'::regclass, 'pg_catalog.pg_statistic_ext_data'::regclass,
        'pg_catalog.pg_largeobject'::regclass, 'pg_catalog.pg_user_mapping'::regclass)
      and has_table_privilege(${role}, c.oid, p)
    union all
    select 'type ' || t.oid::regtype::text, 'USAGE' from pg_type t
    where t.typnamespace in (select oid from user_schemas) and t.typrelid = 0 and t.typelem = 0 and has_type_privilege(${role}, t.oid, 'USAGE')
    union all
    -- An untrusted language (c, internal) is a superuser's whatever its ACL says.
    select 'language ' || l.lanname, 'USAGE' from pg_language l where l.lanpltrusted and has_language_privilege(${role}, l.oid, 'USAGE')
    union all
    select 'foreign-data wrapper ' || w.fdwname, 'USAGE' from pg_foreign_data_wrapper w where has_foreign_data_wrapper_privilege(${role}, w.oid, 'USAGE')
    union all
    select 'foreign server ' || s.srvname, 'USAGE' from pg_foreign_server s where has_server_privilege(${role}, s.oid, 'USAGE')
    union all
    select 'tablespace ' || s.spcname, 'CREATE' from pg_tablespace s where has_tablespace_privilege(${role}, s.oid, 'CREATE')
    union all
    select 'parameter ' || a.parname, p from pg_parameter_acl a, unnest(array['SET', 'ALTER SYSTEM']) p
    where has_parameter_privilege(${role}, a.parname, p)
    union all
    -- (has_largeobject_privilege is PostgreSQL 17's: the ACL, its owner, and PUBLIC, read directly.)
    select 'large object ' || m.oid::text, coalesce(a.privilege_type, 'OWNER') from pg_largeobject_metadata m
      left join lateral aclexplode(m.lomacl) a on true
    where pg_has_role(${role}, m.lomowner, 'MEMBER') or case a.grantee when 0 then true else pg_has_role(${role}, a.grantee, 'MEMBER') end
    union all
    select 'default privileges of ' || pg_get_userbyid(d.defaclrole) || coalesce(' in schema ' || d.defaclnamespace::regnamespace::text, '')
      || ' on ' || case d.defaclobjtype when 'r' then 'tables' when 'S' then 'sequences' when 'f' then 'functions' when 'T' then 'types'
        when 'n' then 'schemas' else d.defaclobjtype::text end
      || ' to ' || case a.grantee when 0 then 'PUBLIC' else pg_get_userbyid(a.grantee) end, a.privilege_type
    from pg_default_acl d, aclexplode(d.defaclacl) a
    -- (PUBLIC is grantee 0, which pg_has_role does not know.)
    where case a.grantee when 0 then true else pg_has_role(${role}, a.grantee, 'MEMBER') end
    union all
    select 'role attributes: ' || coalesce(nullif(concat_ws(' ', case when r.rolsuper then 'SUPERUSER' end, case when r.rolinherit then 'INHERIT' end,
        case when r.rolcreaterole then 'CREATEROLE' end, case when r.rolcreatedb then 'CREATEDB' end, case when r.rolcanlogin then 'LOGIN' end,
        case when r.rolreplication then 'REPLICATION' end, case when r.rolbypassrls then 'BYPASSRLS' end), ''), 'none'), null
    from pg_roles r where r.rolname = ${role}
    union all
    select 'member of ' || g.rolname, null from pg_roles g where g.rolname <> ${role} and pg_has_role(${role}, g.oid, 'MEMBER')`.execute(db)
  const byObject = new Map<string, Set<string>>()
  for (const { object, privilege } of rows) {
    const privileges = byObject.get(object) ?? new Set()
    if (privilege) privileges.add(privilege)
    byObject.set(object, privileges)
  }
  return [...byObject].map(([object, privileges]) => (privileges.size ? `${object}: ${[...privileges].sort().join(', ')}` : object)).sort()
}
