import { sql, type Kysely } from 'kysely'
import { appRoleName } from '../online/app-role.ts'
import { analyzed } from '../online/analyze.ts'
import { withLockRetry } from '../online/lock-retry.ts'
import { applySteps, revertSteps, type Step } from '../online/step.ts'
import { trigger, triggerFiresAlways } from '../online/trigger.ts'

// Frozen: the columns, function bodies and grants below are this migration's own, as of when it
// was written (see README.md in this folder).

/**
 * What SQL of the application role could learn about other tenants after 0008, found by an attack
 * review, closed here:
 * - the audit log's actor check ran before row security, so its error told a user of one tenant
 *   whether a user id belongs to another (a row for tenant B naming B's user failed on row
 *   security, naming anyone else failed on the actor);
 * - tenant_context.tenant_is_active, which withTenant no longer calls, answered for any tenant;
 * - EXPLAIN: the planner estimates with column statistics of every tenant's rows wherever the
 *   operator is leakproof (text and number comparisons are), and for a column that leads an index it
 *   reads the index's actual extremes. Probing estimates recovers values of other tenants, one
 *   character at a time.
 */

/**
 * The columns that hold what a tenant writes, without statistics from here on: no estimate can then
 * be computed from (or recover) another tenant's values. Keys, references, numbers, flags and times
 * keep theirs, for the planner; their distributions across all tenants stay visible to EXPLAIN.
 */
const CONTENT_COLUMNS: Record<string, [column: string, type: string][]> = {
  users: [['email', 'text'], ['name', 'text'], ['image', 'text'], ['role', 'text']],
  skills: [['name', 'text'], ['slug', 'text'], ['description', 'text'], ['category', 'text'], ['tags', 'text[]'], ['content', 'text'], ['status', 'text']],
  ratings: [['comment', 'text']],
  usage_events: [['tool_name', 'text'], ['metadata', 'jsonb']],
  skill_versions: [['content_url', 'text'], ['content_hash', 'text'], ['content_type', 'text'], ['name', 'text'], ['description', 'text'], ['metadata', 'jsonb']],
  skill_embeddings: [['embedding', 'real[]'], ['model_name', 'text'], ['model_version', 'text'], ['input_hash', 'text']],
  skill_reviews: [['categories', 'jsonb'], ['summary', 'text'], ['suggested_description', 'text'], ['reviewed_content_hash', 'text'], ['model_name', 'text']],
  api_keys: [['key_hash', 'text'], ['key_prefix', 'text'], ['name', 'text']],
  site_settings: [['ollama_url', 'text'], ['ollama_model', 'text']],
  audit_logs: [['action', 'text'], ['resource_type', 'text'], ['resource_id', 'text'], ['ip_address', 'text'], ['metadata', 'jsonb']],
}

/**
 * SET STATISTICS 0 stops ANALYZE from collecting; altering the column to its own type drops what
 * was collected (the owner cannot delete from pg_statistic). Same type: no rewrite, the indexes and
 * constraints are kept as they are, and the brief exclusive lock is taken with the lock timeout.
 * `down` gives the columns the default target back; statistics return with the next ANALYZE (run
 * here).
 */
function noStatistics(table: string, columns: [string, string][]): Step {
  return {
    name: `no statistics on ${table}'s content`,
    async up(db) {
      await withLockRetry(db, table, (trx) =>
        sql`alter table ${sql.table(table)} ${sql.join(columns.map(([c, type]) =>
          sql`alter column ${sql.id(c)} set statistics 0, alter column ${sql.id(c)} type ${sql.raw(type)}`))}`.execute(trx))
    },
    async down(db) {
      await withLockRetry(db, table, (trx) =>
        sql`alter table ${sql.table(table)} ${sql.join(columns.map(([c]) => sql`alter column ${sql.id(c)} set statistics -1`))}`.execute(trx))
    },
  }
}

const statistics: Step[] = Object.entries(CONTENT_COLUMNS).map(([table, columns]) => noStatistics(table, columns))
/** On the way down only (after the targets are back): the statistics the columns had before. */
const reanalyzed: Step = { name: 'statistics collected again', up: async () => {}, down: (db) => analyzed(Object.keys(CONTENT_COLUMNS)).up(db) }

/** What 0007 stamped before an audit row was written, with the actor check that now comes after row security. */
const STAMP_WITH_ACTOR = sql`
  create or replace function skills_db.audit_logs_stamp() returns trigger
  language plpgsql security definer
  set search_path = pg_catalog, pg_temp
  as $$
  declare
    was text := current_setting('skills_db.all_tenants', true);
    known boolean;
  begin
    new.id := gen_random_uuid();
    new.created_at := now();
    if new.actor_id is not null then
      perform set_config('skills_db.all_tenants', 'on', true);
      known := exists (select 1 from public.users u where u.id = new.actor_id and u.tenant_id = new.tenant_id);
      perform set_config('skills_db.all_tenants', coalesce(was, ''), true);
      if not known then
        raise exception 'audit actor % is not a user of tenant %', new.actor_id, new.tenant_id
          using errcode = 'foreign_key_violation';
      end if;
    end if;
    return new;
  end $$`

/** Before the row is written: only what the database assigns (no lookup, so nothing to tell). */
const STAMP_ONLY = sql`
  create or replace function skills_db.audit_logs_stamp() returns trigger
  language plpgsql security definer
  set search_path = pg_catalog, pg_temp
  as $$
  begin
    new.id := gen_random_uuid();
    new.created_at := now();
    return new;
  end $$`

const stamp: Step = {
  name: 'audit stamp: id and time only',
  up: async (db) => void (await withLockRetry(db, 'audit_logs', (trx) => STAMP_ONLY.execute(trx))),
  down: async (db) => void (await withLockRetry(db, 'audit_logs', (trx) => STAMP_WITH_ACTOR.execute(trx))),
}

/**
 * The actor must be a user of the row's own tenant, checked after the row passed row security (an
 * AFTER trigger): a row the writer may not write is refused by row security first, whoever it
 * names, so the check only ever answers about the writer's own tenant.
 */
const actorCheck = trigger({
  table: 'audit_logs',
  name: 'actor_of_own_tenant',
  events: 'after insert',
  level: 'row',
  fn: {
    name: 'skills_db.audit_logs_actor_of_own_tenant',
    definition: sql`
      create or replace function skills_db.audit_logs_actor_of_own_tenant() returns trigger
      language plpgsql security definer
      set search_path = pg_catalog, pg_temp
      as $$
      declare
        was text := current_setting('skills_db.all_tenants', true);
        known boolean;
      begin
        if new.actor_id is null then
          return null;
        end if;
        perform set_config('skills_db.all_tenants', 'on', true);
        known := exists (select 1 from public.users u where u.id = new.actor_id and u.tenant_id = new.tenant_id);
        perform set_config('skills_db.all_tenants', coalesce(was, ''), true);
        if not known then
          raise exception 'audit actor % is not a user of tenant %', new.actor_id, new.tenant_id
            using errcode = 'foreign_key_violation';
        end if;
        return null;
      end $$`,
  },
})

/** withTenant checks existence and activity in enter(), which answers nothing without the key. */
const noTenantOracle: Step = {
  name: 'tenant_is_active no longer callable by the app role',
  async up(db) {
    await sql`revoke execute on function tenant_context.tenant_is_active(text) from ${sql.id(await appRoleName(db))}`.execute(db)
  },
  async down(db) {
    await sql`grant execute on function tenant_context.tenant_is_active(text) to ${sql.id(await appRoleName(db))}`.execute(db)
  },
}

const steps: Step[] = [
  noTenantOracle,
  stamp,
  actorCheck,
  triggerFiresAlways('audit_logs', 'actor_of_own_tenant'),
  reanalyzed,
  ...statistics,
]

export const up = (db: Kysely<any>) => applySteps(db, steps)
export const down = (db: Kysely<any>) => revertSteps(db, steps)
