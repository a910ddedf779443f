import { sql, type Kysely } from 'kysely'
import { takeSchemaSnapshot, type SchemaSnapshot } from '../../src/catalog/schema-snapshot.ts'

/**
 * Everything a `down` could leave different, for tests that say it restores the schema exactly.
 * takeSchemaSnapshot (the tables of public, as the migrator's adoption check and the recorded
 * histories in test/history/ use it, so it must keep its shape) leaves out grants, owners, a
 * policy's PERMISSIVE/RESTRICTIVE flag, trigger modes, the schemas beside public and much more;
 * those are here, one readable line each, so a failed comparison is a report.
 */
export interface CatalogSnapshot {
  /** takeSchemaSnapshot: public's tables (columns in order, constraints, indexes, triggers, policies, row security). */
  tables: SchemaSnapshot
  /** Each schema but the system's: owner and privileges. */
  schemas: string[]
  /** Each table, view, sequence …: kind, persistence, owner, privileges, storage options, replica identity, access method, tablespace, view definition, sequence parameters and owning column. */
  relations: string[]
  /** Each column of every schema (public's order is in `tables`): type, NOT NULL, default, identity, generated, collation, statistics target, column privileges. */
  columns: string[]
  /** Constraints, indexes (with validity) and rules of every relation; triggers with the session_replication_role they fire in. */
  dependents: string[]
  /** Each policy: PERMISSIVE or RESTRICTIVE, command, roles, USING, WITH CHECK. */
  policies: string[]
  /** Each function and procedure: signature, result, language, owner, privileges, flags, settings, and its body. */
  functions: string[]
  /** Types of their own (enums, domains, …), extended statistics, comments, extensions, event triggers. */
  others: string[]
  /** Default privileges, the database's privileges, and settings of the database or the app role. */
  grantsAndSettings: string[]
}

export interface CatalogSnapshotOptions {
  /** The application role: it is named per test run, and reads as app_user in the snapshot. */
  appRole: string
}

/**
 * The migrator's bookkeeping, which outlives what it records: its migration tables, the settings
 * table, and its lock's table (which the migrator makes itself, and keeps).
 */
const BOOKKEEPING = ['skills_db.kysely_migration', 'skills_db.kysely_migration_lock', 'skills_db.settings', 'skills_db.migration_lock']

/** The catalog as a down must leave it; see {@link CatalogSnapshot}. */
export async function takeCatalogSnapshot(db: Kysely<any>, { appRole }: CatalogSnapshotOptions): Promise<CatalogSnapshot> {
  const lines = async (query: ReturnType<typeof sql<{ line: string }>>) =>
    (await query.execute(db)).rows.map((r) => r.line.replaceAll(appRole, 'app_user')).sort()
  // Privileges as they apply (a NULL ACL is the default one), in a stable order (a revoke and a
  // grant again may store them in another).
  const acl = (column: ReturnType<typeof sql>) => sql`array_to_string(array(select x::text from unnest(${column}) x order by 1), ',')`
  const schemas = sql`select oid, nspname from pg_namespace where nspname not in ('pg_catalog', 'information_schema') and nspname !~ '^pg_(toast|temp_|toast_temp_)'`
  const relations = sql`select c.*, n.nspname || '.' || c.relname as name from pg_class c join (${schemas}) n on n.oid = c.relnamespace
    where c.relkind in ('r', 'p', 'v', 'm', 'f', 'S') and n.nspname || '.' || c.relname <> all(${BOOKKEEPING})`
  return {
    tables: await takeSchemaSnapshot(db),
    schemas: await lines(sql`select 'schema ' || n.nspname || ' owner ' || pg_get_userbyid(s.nspowner)
        || ' acl ' || ${acl(sql`coalesce(s.nspacl, acldefault('n', s.nspowner))`)} as line
      from (${schemas}) n join pg_namespace s on s.oid = n.oid`),
    relations: await lines(sql`select r.name || ' kind ' || r.relkind::text || ' persistence ' || r.relpersistence::text
        || ' owner ' || pg_get_userbyid(r.relowner)
        || ' acl ' || ${acl(sql`coalesce(r.relacl, acldefault(case r.relkind when 'S' then 's' else 'r' end::"char", r.relowner))`)}
        || ' options ' || coalesce(r.reloptions::text, '{}') || ' replica identity ' || r.relreplident::text
        || ' access method ' || coalesce((select amname from pg_am where oid = r.relam), '-')
        || ' tablespace ' || coalesce((select spcname from pg_tablespace where oid = r.reltablespace), 'default')
        || coalesce(' view ' || pg_get_viewdef(r.oid), '')
        || coalesce((select ' sequence ' || format_type(s.seqtypid, null) || ' start ' || s.seqstart || ' increment ' || s.seqincrement
            || ' min ' || s.seqmin || ' max ' || s.seqmax || ' cache ' || s.seqcache || case when s.seqcycle then ' cycle' else '' end
          from pg_sequence s where s.seqrelid = r.oid), '')
        || coalesce((select ' owned by ' || d.refobjid::regclass::text || '.' || a.attname from pg_depend d
            join pg_attribute a on a.attrelid = d.refobjid and a.attnum = d.refobjsubid
          where d.classid = 'pg_class'::regclass and d.objid = r.oid and d.refclassid = 'pg_class'::regclass and d.deptype in ('a', 'i')
            and r.relkind = 'S'), '') as line
      from (${relations}) r`),
    columns: await lines(sql`select r.name || '.' || a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
        || case when a.attnotnull then ' not null' else '' end || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '')
        || case a.attidentity when '' then '' else ' identity ' || a.attidentity::text end
        || case a.attgenerated when '' then '' else ' generated ' || a.attgenerated::text end
        || case when a.attcollation <> t.typcollation then ' collate ' || (select collname from pg_collation where oid = a.attcollation) else '' end
        || case when coalesce(a.attstattarget, -1) <> -1 then ' statistics ' || a.attstattarget::text else '' end
        || case when a.attacl is null then '' else ' acl ' || ${acl(sql`a.attacl`)} end as line
      from (${relations}) r join pg_attribute a on a.attrelid = r.oid and a.attnum > 0 and not a.attisdropped and r.relkind <> 'S'
      join pg_type t on t.oid = a.atttypid left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum`),
    dependents: await lines(sql`select r.name || ' constraint ' || k.conname || ': ' || pg_get_constraintdef(k.oid)
        || case when k.convalidated then '' else ' (not validated)' end as line
      from (${relations}) r join pg_constraint k on k.conrelid = r.oid where k.contype <> 'n'
      union all
      select r.name || ' index ' || pg_get_indexdef(i.indexrelid) || case when i.indisvalid then '' else ' (INVALID)' end
        || case when i.indisclustered then ' (clustered)' else '' end || case when i.indisreplident then ' (replica identity)' else '' end
        || case when ic.relacl is null then '' else ' acl ' || ${acl(sql`ic.relacl`)} end || ' owner ' || pg_get_userbyid(ic.relowner)
      from (${relations}) r join pg_index i on i.indrelid = r.oid join pg_class ic on ic.oid = i.indexrelid
      union all
      select r.name || ' trigger ' || pg_get_triggerdef(t.oid) || ' fires ' || t.tgenabled::text
      from (${relations}) r join pg_trigger t on t.tgrelid = r.oid where not t.tgisinternal
      union all
      select r.name || ' rule ' || pg_get_ruledef(w.oid) from (${relations}) r join pg_rewrite w on w.ev_class = r.oid where w.rulename <> '_RETURN'`),
    policies: await lines(sql`select r.name || ' policy ' || p.polname || case when p.polpermissive then ' permissive' else ' restrictive' end
        || ' for ' || p.polcmd::text || ' to ' || array_to_string(array(select case g when 0 then 'public' else pg_get_userbyid(g) end
          from unnest(p.polroles) g order by 1), ',')
        || coalesce(' using ' || pg_get_expr(p.polqual, p.polrelid), '') || coalesce(' check ' || pg_get_expr(p.polwithcheck, p.polrelid), '') as line
      from (${relations}) r join pg_policy p on p.polrelid = r.oid`),
    // The body with comments and spacing left out: 0007's down puts back 0005's resolver without its comment.
    functions: await lines(sql`select n.nspname || '.' || p.proname || '(' || pg_get_function_arguments(p.oid) || ') '
        || coalesce(pg_get_function_result(p.oid), 'procedure') || ' kind ' || p.prokind::text || ' language ' || l.lanname
        || ' owner ' || pg_get_userbyid(p.proowner) || ' acl ' || ${acl(sql`coalesce(p.proacl, acldefault('f', p.proowner))`)}
        || ' volatility ' || p.provolatile::text || ' parallel ' || p.proparallel::text
        || case when p.prosecdef then ' security definer' else '' end || case when p.proleakproof then ' leakproof' else '' end
        || case when p.proisstrict then ' strict' else '' end || ' cost ' || p.procost::text || ' rows ' || p.prorows::text
        || ' settings ' || coalesce(p.proconfig::text, '{}')
        || ' body ' || md5(regexp_replace(regexp_replace(coalesce(p.prosrc, ''), '--[^\\n]*', '', 'g'), '\\s+', '', 'g')) as line
      from pg_proc p join (${schemas}) n on n.oid = p.pronamespace join pg_language l on l.oid = p.prolang`),
    others: await lines(sql`select 'type ' || n.nspname || '.' || t.typname || ' ' || t.typtype::text || ' owner ' || pg_get_userbyid(t.typowner)
        || ' acl ' || ${acl(sql`coalesce(t.typacl, acldefault('T', t.typowner))`)}
        || coalesce(' labels ' || (select string_agg(e.enumlabel, ',' order by e.enumsortorder) from pg_enum e where e.enumtypid = t.oid), '')
        || case when t.typtype = 'd' then ' over ' || format_type(t.typbasetype, t.typtypmod) || coalesce(' default ' || t.typdefault, '')
          || coalesce(' ' || (select string_agg(pg_get_constraintdef(k.oid), ' ' order by k.conname) from pg_constraint k where k.contypid = t.oid), '') else '' end as line
      from pg_type t join (${schemas}) n on n.oid = t.typnamespace
      where t.typelem = 0 and (t.typrelid = 0 or (select relkind from pg_class where oid = t.typrelid) = 'c')
      union all
      select 'statistics ' || n.nspname || '.' || s.stxname || ' on ' || s.stxrelid::regclass::text || ' ' || pg_get_statisticsobjdef_columns(s.oid)
        || ' kinds ' || s.stxkind::text || ' owner ' || pg_get_userbyid(s.stxowner)
      from pg_statistic_ext s join (${schemas}) n on n.oid = s.stxnamespace
      union all
      select 'comment on ' || pg_describe_object(d.classoid, d.objoid, d.objsubid) || ': ' || d.description from pg_description d
      where (d.classoid = 'pg_class'::regclass and d.objoid in (select oid from (${relations}) r))
        or (d.classoid = 'pg_proc'::regclass and d.objoid in (select oid from pg_proc where pronamespace in (select oid from (${schemas}) s)))
        or (d.classoid = 'pg_namespace'::regclass and d.objoid in (select oid from (${schemas}) s))
      union all
      select 'extension ' || e.extname || ' ' || e.extversion || ' in ' || e.extnamespace::regnamespace::text from pg_extension e
      union all
      select 'event trigger ' || e.evtname || ' on ' || e.evtevent || ' runs ' || e.evtfoid::regprocedure::text || ' fires ' || e.evtenabled::text
      from pg_event_trigger e`),
    grantsAndSettings: await lines(sql`select 'default privileges of ' || pg_get_userbyid(d.defaclrole)
        || coalesce(' in ' || d.defaclnamespace::regnamespace::text, '') || ' on ' || d.defaclobjtype::text || ': ' || ${acl(sql`d.defaclacl`)} as line
      from pg_default_acl d where d.defaclnamespace = 0 or d.defaclnamespace in (select oid from (${schemas}) s)
      union all
      select 'database acl ' || ${acl(sql`coalesce(datacl, acldefault('d', datdba))`)} || ' owner ' || pg_get_userbyid(datdba)
      from pg_database where datname = current_database()
      union all
      select 'settings' || coalesce(' of ' || pg_get_userbyid(nullif(s.setrole, 0)), '')
        || case when s.setdatabase = 0 then ' everywhere' else ' in this database' end || ': ' || s.setconfig::text
      from pg_db_role_setting s
      where s.setdatabase = (select oid from pg_database where datname = current_database())
        or (s.setdatabase = 0 and s.setrole = (select oid from pg_roles where rolname = ${appRole}))`),
  }
}
