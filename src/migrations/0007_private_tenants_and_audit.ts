import { sql, type Kysely } from 'kysely'
import { appRoleName } from '../online/app-role.ts'
import { databaseFunction } from '../online/database-function.ts'
import { withLockRetry } from '../online/lock-retry.ts'
import { notNull } from '../online/not-null.ts'
import { applySteps, revertSteps, type Step } from '../online/step.ts'
import { trigger, triggerFiresAlways } from '../online/trigger.ts'

// Frozen: the policy conditions, function bodies and triggers below are this migration's own, as
// of when it was written (see README.md in this folder).

/** The schema of the functions the application role calls for its tenant context. */
const schema: Step = {
  name: 'schema tenant_context',
  async up(db) {
    await sql`create schema if not exists tenant_context`.execute(db)
    await sql`revoke all on schema tenant_context from public`.execute(db)
    await sql`grant usage on schema tenant_context to ${sql.id(await appRoleName(db))}`.execute(db)
  },
  async down(db) {
    await sql`drop schema if exists tenant_context`.execute(db)
  },
}

/** withTenant's check: does this tenant exist, and is it active? The app role no longer reads tenants itself. */
const tenantIsActive = databaseFunction({
  signature: 'tenant_context.tenant_is_active(text)',
  executeBy: 'app role',
  definition: sql`
    create or replace function tenant_context.tenant_is_active(tenant text) returns boolean
    language sql stable security definer
    set search_path = pg_catalog, pg_temp
    as $$ select exists (select 1 from public.tenants t where t.id = tenant and t.is_active) $$`,
})

/** The app role sees its own tenant's row of tenants, and no other: no list of every tenant. */
const privateTenants: Step = {
  name: 'tenants private',
  async up(db) {
    const role = await appRoleName(db)
    await withLockRetry(db, 'tenants', async (trx) => {
      await sql`drop policy if exists own_tenant on tenants`.execute(trx)
      await sql`create policy own_tenant on tenants for select to ${sql.id(role)}
        using (id = nullif(current_setting('app.current_tenant_id', true), ''))`.execute(trx)
      // Not FORCEd: the owner reads tenants in its SECURITY DEFINER functions.
      await sql`alter table tenants enable row level security`.execute(trx)
    })
  },
  async down(db) {
    await withLockRetry(db, 'tenants', async (trx) => {
      await sql`drop policy if exists own_tenant on tenants`.execute(trx)
      await sql`alter table tenants disable row level security`.execute(trx)
    })
  },
}

/** resolve_api_key answers only for keys of active tenants; `down` puts back 0005's body. */
const resolver = (activeOnly: boolean) => async (db: Kysely<any>): Promise<void> => {
  await sql`
    create or replace function public.resolve_api_key(presented_key_hash text)
    returns table (tenant_id text, user_id text)
    language plpgsql volatile security definer
    set search_path = pg_catalog, pg_temp
    as $$
    declare
      was text := current_setting('skills_db.all_tenants', true);
    begin
      perform set_config('skills_db.all_tenants', 'on', true);
      return query
        select k.tenant_id, k.user_id from public.api_keys k
        where k.key_hash = presented_key_hash
          and k.revoked_at is null
          and (k.expires_at is null or k.expires_at > now())
          ${activeOnly ? sql.raw('and exists (select 1 from public.tenants t where t.id = k.tenant_id and t.is_active)') : sql``};
      perform set_config('skills_db.all_tenants', coalesce(was, ''), true);
    end $$`.execute(db)
}

/** Rows written before this migration without a tenant cannot be fixed (the log is append-only): say so. */
const noTenantlessAuditRows: Step = {
  name: 'audit rows all have a tenant',
  async up(db) {
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from audit_logs where tenant_id is null`.execute(db)
    if (rows[0]!.n > 0) {
      throw new Error(`audit_logs has ${rows[0]!.n} rows without a tenant, and it is append-only: a superuser must give them the default tenant ` +
        `(ALTER TABLE audit_logs DISABLE TRIGGER no_update_or_delete; UPDATE …; ENABLE ALWAYS TRIGGER …) before this migration can make tenant_id NOT NULL`)
    }
  },
  async down() {},
}

/**
 * What the caller says about an audit row is not trusted: the database assigns its id and time,
 * and its actor must be a user of the row's own tenant (or none, for a system event). SECURITY
 * DEFINER, so the check sees the users of every tenant; only the row's own tenant can match.
 */
const stamp = trigger({
  table: 'audit_logs',
  name: 'stamp',
  events: 'before insert',
  level: 'row',
  fn: {
    name: 'skills_db.audit_logs_stamp',
    definition: sql`
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
      end $$`,
  },
})

const steps: Step[] = [
  schema,
  tenantIsActive,
  privateTenants,
  { name: 'resolve_api_key: active tenants only', up: resolver(true), down: resolver(false) },
  noTenantlessAuditRows,
  notNull('audit_logs', 'tenant_id'),
  stamp,
  // Triggers skip sessions in replica mode (session_replication_role), which a superuser may set:
  // these fire in every mode.
  triggerFiresAlways('audit_logs', 'no_update_or_delete'),
  triggerFiresAlways('audit_logs', 'no_truncate'),
  triggerFiresAlways('audit_logs', 'stamp'),
]

export const up = (db: Kysely<any>) => applySteps(db, steps)
export const down = (db: Kysely<any>) => revertSteps(db, steps)
