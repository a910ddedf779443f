import { sql, type Kysely } from 'kysely'
import { appRoleName } from '../online/app-role.ts'
import { applySteps, revertSteps, type Step } from '../online/step.ts'

/**
 * On a Citus node, each table's shards are tables of public too (`tenants_102008`), with copies of
 * its indexes, and the app role reads them: a distributed query runs on the shards as the app role,
 * and EXPLAIN prints their plans. 0013's check judged a shard of `tenants` by the rule for tenant
 * tables (its key leads with `tenant_id`, which `tenants` has not), so `create_reference_table`
 * copying the tenants into their shard was refused ("refusing to create tenant …: index
 * tenants_pkey_102008 …"). Here a shard is judged by its table's rule, and still judged: its
 * indexes and its columns' statistics show through the shard's plans as the table's would.
 * Without Citus it finds exactly what 0013's did.
 *
 * Part of the open phase, as 0013's check is about more than one tenant: `skills-db open` applies
 * it (on a contracted database too), and `contract` before `distribute` applies it first.
 */
export const phase = 'open'

// Frozen: the function bodies below are this migration's own, as of when it was written (see
// README.md in this folder).
const SIGNATURE = 'skills_db.side_channel_violations()'

/** Citus's shards (pg_dist_shard, on the coordinator and, with metadata synced, the workers) and the table each belongs to. */
const CITUS_SHARDS = `select pg_catalog.to_regclass(pg_catalog.format('%I.%I', n.nspname, l.relname || '_' || s.shardid))::oid as oid, s.logicalrelid::oid as logical
  from pg_catalog.pg_dist_shard s join pg_catalog.pg_class l on l.oid = s.logicalrelid join pg_catalog.pg_namespace n on n.oid = l.relnamespace`

const judgingShards = (appRole: string) => sql`
  create or replace function skills_db.side_channel_violations() returns setof text
  language plpgsql stable security definer
  set search_path = pg_catalog, pg_temp
  as $fn$
  declare
    shards text := case when pg_catalog.to_regclass('pg_catalog.pg_dist_shard') is null
      then 'select null::oid as oid, null::oid as logical where false' else ${sql.lit(CITUS_SHARDS)} end;
  begin
    return query execute pg_catalog.format($q$
      with shards as (%s), app_tables as (
        select c.oid, c.relname,
          case when coalesce((select s.logical from shards s where s.oid = c.oid), c.oid) = 'public.tenants'::regclass then 'id' else 'tenant_id' end as lead
        from pg_class c
        where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p')
          and has_table_privilege(%L, c.oid, 'SELECT')
      ), internal as (
        select o.oid from pg_collation o join pg_namespace n on n.oid = o.collnamespace where n.nspname = 'skills_db' and o.collname = 'internal'
      )
      select format('index %%s on %%s neither leads with %%s nor is in collation skills_db.internal: the app role could observe other tenants'' values through it', i.relname, t.relname, t.lead)
      from app_tables t join pg_index x on x.indrelid = t.oid join pg_class i on i.oid = x.indexrelid
      where not (x.indkey[0] <> 0 and (select a.attname from pg_attribute a where a.attrelid = t.oid and a.attnum = x.indkey[0]) = t.lead)
        and not coalesce((select bool_and(k.coll in (select oid from internal))
                          from unnest(x.indcollation::oid[]) with ordinality k(coll, n) where k.n <= x.indnkeyatts), false)
      union all
      select format('column %%s.%%s keeps planner statistics: EXPLAIN''s estimates could recover other tenants'' values', t.relname, a.attname)
      from app_tables t join pg_attribute a on a.attrelid = t.oid
      where a.attnum > 0 and not a.attisdropped and coalesce(a.attstattarget, -1) <> 0
      order by 1
    $q$, shards, ${sql.lit(appRole)});
  end $fn$`

/** 0013's, restored by `down`. */
const as0013 = (appRole: string) => sql`
  create or replace function skills_db.side_channel_violations() returns setof text
  language sql stable security definer
  set search_path = pg_catalog, pg_temp
  as $$
    with app_tables as (
      select c.oid, c.relname, case c.relname when 'tenants' then 'id' else 'tenant_id' end as lead
      from pg_class c
      where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p')
        and has_table_privilege(${sql.lit(appRole)}, c.oid, 'SELECT')
    ), internal as (
      select o.oid from pg_collation o join pg_namespace n on n.oid = o.collnamespace where n.nspname = 'skills_db' and o.collname = 'internal'
    )
    select format('index %s on %s neither leads with %s nor is in collation skills_db.internal: the app role could observe other tenants'' values through it', i.relname, t.relname, t.lead)
    from app_tables t join pg_index x on x.indrelid = t.oid join pg_class i on i.oid = x.indexrelid
    where not (x.indkey[0] <> 0 and (select a.attname from pg_attribute a where a.attrelid = t.oid and a.attnum = x.indkey[0]) = t.lead)
      and not coalesce((select bool_and(k.coll in (select oid from internal))
                        from unnest(x.indcollation::oid[]) with ordinality k(coll, n) where k.n <= x.indnkeyatts), false)
    union all
    select format('column %s.%s keeps planner statistics: EXPLAIN''s estimates could recover other tenants'' values', t.relname, a.attname)
    from app_tables t join pg_attribute a on a.attrelid = t.oid
    where a.attnum > 0 and not a.attisdropped and coalesce(a.attstattarget, -1) <> 0
    order by 1
  $$`

const replaced: Step = {
  name: `${SIGNATURE}: a Citus shard judged by its table's rule`,
  async up(db) {
    await judgingShards(await appRoleName(db)).execute(db)
    await sql`revoke all on function ${sql.raw(SIGNATURE)} from public`.execute(db)
  },
  async down(db) {
    await as0013(await appRoleName(db)).execute(db)
    await sql`revoke all on function ${sql.raw(SIGNATURE)} from public`.execute(db)
  },
}

export const up = (db: Kysely<any>) => applySteps(db, [replaced])
export const down = (db: Kysely<any>) => revertSteps(db, [replaced])
