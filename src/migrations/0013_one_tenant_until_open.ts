import { sql, type Kysely } from 'kysely'
import { appRoleName } from '../online/app-role.ts'
import { databaseFunction } from '../online/database-function.ts'
import { applySteps, revertSteps, type Step } from '../online/step.ts'
import { trigger } from '../online/trigger.ts'

// Frozen: the function bodies below are this migration's own, as of when it was written (see
// README.md in this folder).

/**
 * With one tenant, nothing the app role observes can be another tenant's. With a second, the
 * single-tenant app's global keys and indexes, the planner's statistics and the rest that the open
 * phase (0014, `skills-db open`) replaces would let the app role observe the other's values (an
 * outside review recovered emails, slugs, key hashes and tenant ids that way). So no tenant beyond
 * the first is created while any of it is there: before the open phase, after a contract phase
 * rolled back, or after an index or column added by hand that breaks the rules.
 */

/**
 * What keeps a table the app role reads from leaking another tenant's values, as a list of what
 * breaks it: an index that neither leads with tenant_id (tenants: with id) nor is built in the
 * collation skills_db.internal (which the app role cannot name, so its queries cannot use such an
 * index), or a column that keeps planner statistics.
 */
const violations = (appRole: string) => databaseFunction({
  signature: 'skills_db.side_channel_violations()',
  definition: sql`
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
    $$`,
})

const tenantGuard = trigger({
  table: 'tenants',
  name: 'no_other_tenant_while_values_leak',
  events: 'before insert',
  level: 'row',
  fn: {
    name: 'skills_db.no_other_tenant_while_values_leak',
    definition: sql`
      create or replace function skills_db.no_other_tenant_while_values_leak() returns trigger
      language plpgsql security definer
      set search_path = pg_catalog, pg_temp
      as $$
      declare
        found text;
      begin
        if not exists (select 1 from public.tenants) then
          return new;
        end if;
        select string_agg(v, '; ') into found from (select v from skills_db.side_channel_violations() v limit 3) l;
        if found is not null then
          raise exception 'refusing to create tenant "%": the app role could observe other tenants'' values: %', new.slug, found
            using errcode = 'object_not_in_prerequisite_state',
              hint = 'run skills-db open (migrateOpen()), which replaces them (after a contract phase rolled back: roll back the open phase, then open again); an index or column added by hand must follow the same rules';
        end if;
        return new;
      end $$`,
  },
})

async function steps(db: Kysely<any>): Promise<Step[]> {
  return [violations(await appRoleName(db)), tenantGuard]
}

export const up = async (db: Kysely<any>) => applySteps(db, await steps(db))
export const down = async (db: Kysely<any>) => revertSteps(db, await steps(db))
