import { sql, type Kysely } from 'kysely'
import { DownBlocked, guardDown } from '../online/data-loss-guard.ts'
import { databaseFunction } from '../online/database-function.ts'
import { applySteps, revertSteps, type Step } from '../online/step.ts'
import { trigger, triggerFiresAlways } from '../online/trigger.ts'

/**
 * Part of the open phase: a single-tenant app on the owner role keeps TRUNCATE (the owner's
 * privileges cannot be taken from it), and TRUNCATE passes row security by, so one `truncate skills
 * cascade` of the old app would empty every tenant's tables. From here TRUNCATE of a tenant table
 * is refused while more than one tenant exists, except for a superuser and for the migrator (the
 * session that holds the migration lock's secret, as the owner's all-tenants view). The plain-role
 * old app and the app role have no TRUNCATE at all; audit_logs and audit_signatures refuse it for
 * everyone already. The triggers fire in every session_replication_role.
 */
export const phase = 'open'

// Frozen: the tables and the function body below are this migration's own, as of when it was
// written (see README.md in this folder).
const TABLES = [
  'tenants', 'users', 'skills', 'ratings', 'usage_events', 'skill_versions',
  'skill_embeddings', 'skill_reviews', 'api_keys', 'site_settings',
] as const
const FN = 'skills_db.truncate_within_one_tenant'

const refuse = databaseFunction({
  signature: `${FN}()`,
  definition: sql`
    create or replace function skills_db.truncate_within_one_tenant() returns trigger
    language plpgsql security definer
    set search_path = pg_catalog, pg_temp
    as $$
    begin
      if (select count(*) from public.tenants) > 1 and not skills_db.owner_sees_all_tenants() then
        raise exception 'TRUNCATE % would remove the rows of every tenant, and row security does not apply to it', tg_table_name
          using errcode = 'insufficient_privilege',
            hint = 'DELETE the rows (row security keeps it to the tenants this role may see); removing a whole tenant is the migrator''s or a superuser''s job';
      end if;
      return null;
    end $$`,
})

/** Undoing this gives an old app on the owner role every tenant's rows to truncate: only while there is one tenant. */
const oneTenant = guardDown('a single tenant', async (db) => {
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from tenants`.execute(db)
  if (rows[0]!.n > 1) {
    throw new DownBlocked(`cannot roll back the open phase: the database has ${rows[0]!.n} tenants, and without this guard an old app on the owner role could TRUNCATE every tenant's rows; delete the other tenants first`)
  }
})

// The guard last: down runs the steps in reverse, so it is checked before anything is undone.
const steps: Step[] = [
  refuse,
  ...TABLES.flatMap((table) => [
    trigger({ table, name: 'truncate_within_one_tenant', events: 'before truncate', level: 'statement', fn: { name: FN } }),
    triggerFiresAlways(table, 'truncate_within_one_tenant'),
  ]),
  oneTenant,
]

export const up = (db: Kysely<any>) => applySteps(db, steps)
export const down = (db: Kysely<any>) => revertSteps(db, steps)
