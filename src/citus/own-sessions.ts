import { sql, type Kysely } from 'kysely'

/**
 * Whether the sessions that the open and contract phases take for the single-tenant app (its roles',
 * and those of superuser or BYPASSRLS roles, in this database) are all Citus's own: its maintenance
 * daemon and other background workers, and the connections other nodes open to this one for
 * distributed work (`citus_internal gpid=…`, as a superuser). On a Citus coordinator they are always
 * there, so those phases refused every time. False when there is no session of the kind, or
 * Citus is not installed, or any other is connected: the phase then checks, and names them all.
 *
 * An application name is the client's to choose: a superuser app that calls itself citus_internal
 * passes here, as it could pass any check by its own hand. The check guards against an operator
 * who forgot the old app, not against a superuser.
 */
export async function onlyCitusOwnSessions(db: Kysely<any>, oldAppRoles: string[]): Promise<boolean> {
  const { rows } = await sql<{ citus: number; others: number }>`
    with taken as (
      select a.backend_type, a.application_name, r.rolsuper
      from pg_catalog.pg_stat_activity a join pg_catalog.pg_roles r on r.oid = a.usesysid
      where a.datname = pg_catalog.current_database() and a.pid <> pg_catalog.pg_backend_pid()
        and (r.rolname = any(${oldAppRoles}::text[])
          or exists (select 1 from pg_catalog.pg_roles x where (x.rolsuper or x.rolbypassrls) and pg_catalog.pg_has_role(r.oid, x.oid, 'MEMBER')))
    ), judged as (
      select (t.backend_type is distinct from 'client backend' or (t.rolsuper and t.application_name ~ '^citus_internal gpid=[0-9]+$')) as citus from taken t
    )
    select count(*) filter (where citus)::int as citus, count(*) filter (where not citus)::int as others from judged
    where exists (select 1 from pg_catalog.pg_extension where extname = 'citus')`.execute(db)
  return rows[0]!.citus > 0 && rows[0]!.others === 0
}
