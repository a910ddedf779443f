import { sql, type Kysely } from 'kysely'

/** One thing in the schema that Citus would refuse, or run wrongly, once the tables are distributed by tenant_id. */
export interface CitusViolation {
  /** The rule it breaks, in a few words (`keys include tenant_id`, …); the same for every object that breaks it. */
  rule: string
  /** What breaks it: a table, or one of its parts as `table.part` (a column, index, constraint, trigger, policy), or a function with its arguments. */
  object: string
  /** What is wrong with it, in one line. */
  message: string
}

/**
 * The tables `distribute` makes distributed by tenant_id (every table of public with a tenant_id
 * column), and the one it makes a reference table (tenants, which they all reference).
 */
export const DISTRIBUTED = sql`(select c.oid from pg_catalog.pg_class c join pg_catalog.pg_attribute a on a.attrelid = c.oid
  where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p') and not c.relispartition and a.attname = 'tenant_id' and not a.attisdropped)`
const REFERENCE = sql`(select 'public.tenants'::regclass::oid)`

/**
 * The functions and triggers skills-db ships for distributed tables, which `distribute` knows how
 * to carry onto the shards (a trigger function there may touch only rows of the same tenant, in
 * colocated tables). Anything else is named, for someone to check and list here.
 */
const KNOWN_TRIGGER_FUNCTIONS = [
  'public.audit_logs_append_only', 'skills_db.audit_logs_stamp', 'skills_db.audit_logs_actor_of_own_tenant',
  'public.audit_signatures_append_only', 'skills_db.users_clear_references', 'skills_db.skills_clear_references',
  // On tenants (a reference table): reads the catalog only.
  'skills_db.no_other_tenant_while_values_leak',
  // BEFORE TRUNCATE, statement level: counts tenants (a reference table), touches no row.
  'skills_db.truncate_within_one_tenant',
]

/**
 * Inspects the catalog for what Citus refuses on tables distributed by tenant_id (Citus 12/13,
 * from its source and documentation), without Citus: each rule names every object that breaks it.
 * Empty on the contracted schema (0010); the expand schema breaks several.
 *
 * @example
 * const violations = await citusReadiness(db)
 * for (const v of violations) console.log(`${v.rule}: ${v.object}: ${v.message}`)
 */
export async function citusReadiness(db: Kysely<any>): Promise<CitusViolation[]> {
  const found: CitusViolation[] = []
  const add = (rule: string, rows: { object: string; message: string }[]) => found.push(...rows.map((r) => ({ rule, ...r })))

  // Citus: "Distributed relations cannot have UNIQUE, EXCLUDE, or PRIMARY KEY constraints that do not include the partition column".
  add('keys include tenant_id', (await sql<{ object: string; message: string }>`
    select c.relname || '.' || ic.relname as object,
      pg_catalog.format('%s index (%s) does not include tenant_id', case when i.indisprimary then 'the primary key' when i.indisexclusion then 'an exclusion constraint''s' else 'a unique' end,
        pg_catalog.pg_get_indexdef(i.indexrelid, 0, true)) as message
    from pg_catalog.pg_index i join pg_catalog.pg_class c on c.oid = i.indrelid join pg_catalog.pg_class ic on ic.oid = i.indexrelid
    where i.indrelid in ${DISTRIBUTED} and (i.indisunique or i.indisexclusion)
      and not exists (select 1 from pg_catalog.pg_attribute a where a.attrelid = i.indrelid and a.attname = 'tenant_id' and a.attnum = any(i.indkey))
    order by 1`.execute(db)).rows)

  // Between distributed tables: the distribution column in the same position on both sides, and no SET NULL / SET DEFAULT
  // (nor ON UPDATE CASCADE) with the distribution column in the key.
  const fks = (await sql<{ object: string; tenant_aligned: boolean; bad_action: string | null; parent: string; parent_kind: string }>`
    select c.relname || '.' || k.conname as object, p.relname as parent,
      case when k.confrelid in ${DISTRIBUTED} then 'distributed' when k.confrelid in ${REFERENCE} then 'reference' else 'other' end as parent_kind,
      exists (select 1 from pg_catalog.generate_subscripts(k.conkey, 1) s
        where (select attname from pg_catalog.pg_attribute where attrelid = k.conrelid and attnum = k.conkey[s]) = 'tenant_id'
          and (select attname from pg_catalog.pg_attribute where attrelid = k.confrelid and attnum = k.confkey[s]) = 'tenant_id') as tenant_aligned,
      case when k.confdeltype in ('n', 'd') then 'ON DELETE ' || case k.confdeltype when 'n' then 'SET NULL' else 'SET DEFAULT' end
        when k.confupdtype in ('n', 'd', 'c') then 'ON UPDATE ' || case k.confupdtype when 'n' then 'SET NULL' when 'd' then 'SET DEFAULT' else 'CASCADE' end end as bad_action
    from pg_catalog.pg_constraint k join pg_catalog.pg_class c on c.oid = k.conrelid join pg_catalog.pg_class p on p.oid = k.confrelid
    where k.contype = 'f' and (k.conrelid in ${DISTRIBUTED} or k.conrelid in ${REFERENCE})
    order by 1`.execute(db)).rows
  const tenants = (await sql<{ t: string | null }>`select pg_catalog.to_regclass('public.tenants')::text as t`.execute(db)).rows[0]?.t
  for (const fk of fks) {
    const fromReference = fk.object.startsWith('tenants.')
    if (fromReference && fk.parent_kind === 'distributed') {
      found.push({ rule: 'no references from the reference table', object: fk.object, message: `tenants (a reference table) cannot reference the distributed table ${fk.parent}` })
    } else if (fk.parent_kind === 'other' && !fromReference) {
      found.push({ rule: 'references stay inside the distribution', object: fk.object, message: `references ${fk.parent}, which is neither distributed nor a reference table` })
    } else if (fk.parent_kind === 'distributed' && !fk.tenant_aligned) {
      found.push({ rule: 'references include tenant_id', object: fk.object, message: `a reference to ${fk.parent} without tenant_id on both sides, in the same position: the rows it joins may sit on different shards` })
    } else if (fk.parent_kind === 'distributed' && fk.bad_action) {
      found.push({ rule: 'no SET NULL / SET DEFAULT with the distribution key', object: fk.object, message: `${fk.bad_action} on a key that includes tenant_id (Citus refuses it; clear the references with a trigger instead)` })
    }
  }
  if (!tenants) found.push({ rule: 'a tenants table to reference', object: 'tenants', message: 'there is no public.tenants, the table distribute makes a reference table' })

  // Citus distributes rows by their tenant_id: it must always have one, of one type in every table (colocation).
  add('tenant_id NOT NULL', (await sql<{ object: string; message: string }>`
    select c.relname || '.tenant_id' as object, 'may be NULL: a row without a distribution value has no shard' as message
    from pg_catalog.pg_attribute a join pg_catalog.pg_class c on c.oid = a.attrelid
    where a.attrelid in ${DISTRIBUTED} and a.attname = 'tenant_id' and not a.attnotnull order by 1`.execute(db)).rows)
  add('tenant_id of one type', (await sql<{ object: string; message: string }>`
    with t as (select c.relname, pg_catalog.format_type(a.atttypid, a.atttypmod) as type
      from pg_catalog.pg_attribute a join pg_catalog.pg_class c on c.oid = a.attrelid where a.attrelid in ${DISTRIBUTED} and a.attname = 'tenant_id')
    select t.relname || '.tenant_id' as object, pg_catalog.format('is %s, where tenants.id is %s: colocated tables need one type', t.type, r.type) as message
    from t, (select pg_catalog.format_type(a.atttypid, a.atttypmod) as type from pg_catalog.pg_attribute a
      where a.attrelid = pg_catalog.to_regclass('public.tenants') and a.attname = 'id') r
    where t.type <> r.type order by 1`.execute(db)).rows)

  // "could not create distributed plan … Consider using PL/pgSQL functions instead": parameters of an SQL function are
  // not resolved before Citus plans what its body reads.
  add('no SQL function with parameters reads a distributed table', (await sql<{ object: string; message: string }>`
    select n.nspname || '.' || p.proname || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')' as object,
      pg_catalog.format('an SQL-language function with parameters that reads %s: write it in PL/pgSQL', pg_catalog.string_agg(c.relname, ', ' order by c.relname)) as message
    from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
      join pg_catalog.pg_class c on c.oid in ${DISTRIBUTED} and p.prosrc ~* ('\\m' || c.relname || '\\M')
    where p.prolang = (select oid from pg_catalog.pg_language where lanname = 'sql') and p.pronargs > 0
      and n.nspname not in ('pg_catalog', 'information_schema')
    group by n.nspname, p.proname, p.oid order by 1`.execute(db)).rows)

  // Triggers run on each shard (citus.enable_unsafe_triggers, which distribute sets): safe only when their function
  // touches the same tenant's rows in colocated tables. skills-db's own are; anything else is for someone to check.
  add('triggers distribute knows', (await sql<{ object: string; message: string }>`
    select c.relname || '.' || t.tgname as object,
      pg_catalog.format('runs %s on each shard, which skills-db does not know to be safe there (touching only the row''s own tenant): check it, then add it to KNOWN_TRIGGER_FUNCTIONS',
        p.oid::regprocedure) as message
    from pg_catalog.pg_trigger t join pg_catalog.pg_class c on c.oid = t.tgrelid join pg_catalog.pg_proc p on p.oid = t.tgfoid
      join pg_catalog.pg_namespace n on n.oid = p.pronamespace
    where not t.tgisinternal and (t.tgrelid in ${DISTRIBUTED} or t.tgrelid in ${REFERENCE})
      and n.nspname || '.' || p.proname <> all(${KNOWN_TRIGGER_FUNCTIONS}::text[])
    order by 1`.execute(db)).rows)

  // "Subqueries are not supported in policies on distributed tables" (Citus copies policies onto every shard).
  add('no subqueries in policies', (await sql<{ object: string; message: string }>`
    select c.relname || '.' || p.polname as object, 'a policy with a subquery: Citus refuses it on distributed tables; call a function instead' as message
    from pg_catalog.pg_policy p join pg_catalog.pg_class c on c.oid = p.polrelid
    where p.polrelid in ${DISTRIBUTED}
      and (coalesce(pg_catalog.pg_get_expr(p.polqual, p.polrelid), '') || ' ' || coalesce(pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid), '')) ~* '\\mselect\\M'
    order by 1`.execute(db)).rows)

  // Other refusals of create_distributed_table, from Citus's source.
  add('identity columns are bigint', (await sql<{ object: string; message: string }>`
    select c.relname || '.' || a.attname as object, pg_catalog.format('an identity column of type %s: Citus distributes bigint ones only', pg_catalog.format_type(a.atttypid, a.atttypmod)) as message
    from pg_catalog.pg_attribute a join pg_catalog.pg_class c on c.oid = a.attrelid
    where a.attrelid in ${DISTRIBUTED} and a.attidentity <> '' and a.atttypid <> 'pg_catalog.int8'::regtype order by 1`.execute(db)).rows)
  add('tenant_id is a plain column', (await sql<{ object: string; message: string }>`
    select c.relname || '.tenant_id' as object, 'is a generated column: Citus cannot distribute by one' as message
    from pg_catalog.pg_attribute a join pg_catalog.pg_class c on c.oid = a.attrelid
    where a.attrelid in ${DISTRIBUTED} and a.attname = 'tenant_id' and a.attgenerated <> '' order by 1`.execute(db)).rows)
  add('no inheritance', (await sql<{ object: string; message: string }>`
    select c.relname as object, 'inherits from, or is inherited by, another table: Citus distributes plain and declaratively partitioned tables' as message
    from pg_catalog.pg_inherits h join pg_catalog.pg_class c on c.oid in (h.inhrelid, h.inhparent)
    where c.oid in ${DISTRIBUTED} and not exists (select 1 from pg_catalog.pg_partitioned_table pt where pt.partrelid = h.inhparent) order by 1`.execute(db)).rows)
  return found
}
