import { sql, type Kysely } from 'kysely'
import { index } from '../online/concurrent-index.ts'
import { guardDown, refuseDataLoss } from '../online/data-loss-guard.ts'
import { databaseFunction, replacedFunction } from '../online/database-function.ts'
import { applySteps, revertSteps, type Step } from '../online/step.ts'

/**
 * Tenants as a feature of the product (issue 19): the app role creates, resolves, suspends and
 * reactivates tenants, and the operator exports, deletes and imports them.
 *
 * - The app role still reads no tenant but its own. It calls SECURITY DEFINER functions instead:
 *   `resolve_tenant` (a slug or domain to an id and the active flag: what a request's URL names),
 *   and, signed with the tenant key over the request and this transaction's challenge (0008's
 *   pid and transaction start), `create_tenant` and `set_tenant_active`. SQL injected as the app
 *   role has no key, so it can create, suspend or reactivate nothing, and a signature it saw serves
 *   no other transaction. A lifecycle request's text starts with 'skills-db tenant lifecycle v1 ',
 *   which no tenant id `create_tenant` accepts can, so it is never also a signed `enter()`.
 * - `create_tenant` answers one thing about tenants other than the caller's own request: that the
 *   slug or domain is taken (the same error, whichever). A retry of a request that committed (the
 *   same id, slug and request key, whose hash is kept in skills_db.tenant_signups) answers
 *   'exists'; nothing else does, so knowing a tenant's id and slug claims nothing.
 * - Every change is logged in skills_db.tenant_lifecycle, which outlives the tenant.
 * - Deleting a tenant (the operator's `skills-db tenant delete`) removes its audit trail: the
 *   append-only triggers let the owner (or a superuser) delete the rows of a suspended tenant, in a
 *   transaction that names it in skills_db.deleting_tenant. skills_db.tenant_removals lists the
 *   tenants being deleted, so a deletion resumes and its tenant is not reactivated half-deleted.
 * - Importing a tenant keeps its audit rows as exported, their ids, times and hashes: the stamp
 *   trigger checks that each continues the tenant's chain instead of making it, in the owner's
 *   transaction that names the tenant in skills_db.importing_tenant.
 * - The triggers look at those two settings first, and only then call the owner's function that
 *   checks who asks: an ordinary insert or delete pays one current_setting(). What they read is on
 *   every Citus node (the setting, propagated by SET LOCAL; tenants, a reference table).
 * - Domains are unique, in the internal collation (0014): lookups by the owner's functions only.
 */
export const phase = 'open'

// Frozen: the tables, function bodies and patterns below are this migration's own, as of when it
// was written (see README.md in this folder).

const privateTables: Step = {
  name: 'tables skills_db.tenant_lifecycle, tenant_signups, tenant_removals',
  async up(db) {
    await sql`create table if not exists skills_db.tenant_lifecycle (
      at timestamptz not null default now(),
      tenant_id text not null,
      slug text,
      event text not null,
      by_role text not null default session_user,
      detail jsonb)`.execute(db)
    await sql`create index if not exists tenant_lifecycle_tenant on skills_db.tenant_lifecycle (tenant_id, at)`.execute(db)
    await sql`create table if not exists skills_db.tenant_signups (tenant_id text primary key, request_hash text not null)`.execute(db)
    await sql`create table if not exists skills_db.tenant_removals (
      tenant_id text primary key, slug text not null, started_at timestamptz not null default now())`.execute(db)
    for (const table of ['tenant_lifecycle', 'tenant_signups', 'tenant_removals']) {
      await sql`revoke all on ${sql.table(`skills_db.${table}`)} from public`.execute(db)
    }
  },
  async down(db) {
    for (const table of ['tenant_removals', 'tenant_signups', 'tenant_lifecycle']) {
      await sql`drop table if exists ${sql.table(`skills_db.${table}`)}`.execute(db)
    }
  },
}

const LIFECYCLE = `'skills-db tenant lifecycle v1 '`
const TENANT_ID = `'^[A-Za-z0-9_-]{1,128}$'`
const SLUG = `'^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'`
const DOMAIN = `'^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$'`
const PLAN = `'^[a-z0-9_-]{1,64}$'`

/**
 * Whether `signature` is the tenant key's HMAC of `request || ':' || tenant_context.challenge()`.
 * Only the owner's functions call it: it is no oracle the app role can ask.
 */
const lifecycleSigned = databaseFunction({
  signature: 'skills_db.lifecycle_request_signed(text, text)',
  definition: sql`
    create or replace function skills_db.lifecycle_request_signed(request text, signature text) returns boolean
    language plpgsql stable security definer
    set search_path = pg_catalog, pg_temp
    as $$
    declare
      signed_with text := split_part(signature, ':', 1);
      pads record;
    begin
      select k.inner_pad, k.outer_pad into pads from skills_db.tenant_context_keys k where k.key_id = signed_with;
      if not found then
        raise exception 'the tenant request is signed with key "%", which the database does not hold', left(signed_with, 64)
          using errcode = 'insufficient_privilege',
            hint = 'sign with a key the migrator was given in SKILLS_DB_TENANT_KEYS (or tenantKeys)';
      end if;
      return encode(sha256(pads.outer_pad || sha256(pads.inner_pad
               || convert_to(request || ':' || tenant_context.challenge(), 'UTF8'))), 'hex')
             = substr(signature, length(signed_with) + 2);
    end $$`,
})

const createTenant = databaseFunction({
  signature: 'tenant_context.create_tenant(text, text, text, text, text, text, text, text, text, text)',
  executeBy: 'app role',
  definition: sql`
    create or replace function tenant_context.create_tenant(
      tenant text, tenant_name text, tenant_slug text, tenant_domain text, tenant_plan text,
      admin_id text, admin_email text, admin_name text, request_hash text, signature text) returns text
    language plpgsql volatile security definer
    set search_path = pg_catalog, pg_temp
    as $$
    declare
      request text := ${sql.raw(LIFECYCLE)} || 'create'
        || skills_db.audit_field(tenant) || skills_db.audit_field(tenant_name) || skills_db.audit_field(tenant_slug)
        || skills_db.audit_field(tenant_domain) || skills_db.audit_field(tenant_plan) || skills_db.audit_field(admin_id)
        || skills_db.audit_field(admin_email) || skills_db.audit_field(admin_name) || skills_db.audit_field(request_hash);
      inserted text;
    begin
      if not skills_db.lifecycle_request_signed(request, signature) then
        raise exception 'the tenant request''s signature is not valid for this transaction' using errcode = 'insufficient_privilege';
      end if;
      -- The client checks these first, with messages of its own; here they hold for SQL that calls this directly.
      if tenant is null or tenant !~ ${sql.raw(TENANT_ID)} or tenant_slug is null or tenant_slug !~ ${sql.raw(SLUG)}
         or (tenant_domain is not null and tenant_domain !~ ${sql.raw(DOMAIN)}) or tenant_plan is null or tenant_plan !~ ${sql.raw(PLAN)}
         or coalesce(length(tenant_name), 0) not between 1 and 200 or request_hash is null
         or (admin_email is not null and (admin_id is null or admin_id !~ ${sql.raw(TENANT_ID)})) then
        raise exception 'invalid tenant request' using errcode = 'invalid_parameter_value';
      end if;
      -- Any of the id, the slug or the domain taken: the same answer, and no error of the unique index that names it.
      insert into public.tenants (id, name, slug, domain, plan) values (tenant, tenant_name, tenant_slug, tenant_domain, tenant_plan)
        on conflict do nothing returning id into inserted;
      if inserted is null then
        if exists (select 1 from skills_db.tenant_signups s where s.tenant_id = tenant and s.request_hash = create_tenant.request_hash)
           and exists (select 1 from public.tenants t where t.id = tenant and t.slug = tenant_slug) then
          return 'exists';
        end if;
        raise exception 'the slug or domain is taken' using errcode = 'unique_violation', hint = 'skills-db: tenant taken';
      end if;
      insert into skills_db.tenant_signups (tenant_id, request_hash) values (tenant, request_hash);
      if admin_email is not null then
        insert into public.users (id, tenant_id, email, name, role) values (admin_id, tenant, admin_email, admin_name, 'admin');
      end if;
      insert into skills_db.tenant_lifecycle (tenant_id, slug, event, detail)
        values (tenant, tenant_slug, 'created', jsonb_build_object('plan', tenant_plan, 'domain', tenant_domain, 'admin', admin_id));
      return 'created';
    end $$`,
})

/** A request's tenant, by the slug or the domain its URL names: one lookup of one unique index. */
const resolveTenant = databaseFunction({
  signature: 'tenant_context.resolve_tenant(text, text)',
  executeBy: 'app role',
  definition: sql`
    create or replace function tenant_context.resolve_tenant(by_slug text, by_domain text)
    returns table (tenant_id text, active boolean)
    language plpgsql stable security definer
    set search_path = pg_catalog, pg_temp
    as $$
    begin
      if by_slug is not null then
        return query select t.id, t.is_active from public.tenants t where t.slug = by_slug collate skills_db.internal;
      elsif by_domain is not null then
        return query select t.id, t.is_active from public.tenants t where t.domain = lower(by_domain) collate skills_db.internal;
      end if;
    end $$`,
})

/**
 * Suspends (active false) or reactivates a tenant: enter() and resolve_api_key read is_active on
 * every call, so the next request sees it. 'unchanged' when it already was; a tenant being deleted
 * is not reactivated.
 */
const setTenantActive = databaseFunction({
  signature: 'tenant_context.set_tenant_active(text, boolean, text)',
  executeBy: 'app role',
  definition: sql`
    create or replace function tenant_context.set_tenant_active(tenant text, active boolean, signature text) returns text
    language plpgsql volatile security definer
    set search_path = pg_catalog, pg_temp
    as $$
    declare
      event text := case when active then 'activated' else 'suspended' end;
      slug_of text;
    begin
      if active is null or not skills_db.lifecycle_request_signed(${sql.raw(LIFECYCLE)} || event || skills_db.audit_field(tenant), signature) then
        raise exception 'the tenant request''s signature is not valid for this transaction' using errcode = 'insufficient_privilege';
      end if;
      select t.slug into slug_of from public.tenants t where t.id = tenant for update;
      if not found then
        raise exception 'no tenant has the id "%"', left(tenant, 128) using errcode = 'no_data_found', hint = 'skills-db tenant list shows the ids';
      end if;
      if active and exists (select 1 from skills_db.tenant_removals r where r.tenant_id = tenant) then
        raise exception 'tenant "%" is being deleted: finish it with skills-db tenant delete', left(tenant, 128)
          using errcode = 'object_not_in_prerequisite_state';
      end if;
      update public.tenants t set is_active = active, updated_at = now() where t.id = tenant and t.is_active is distinct from active;
      if not found then
        return 'unchanged';
      end if;
      insert into skills_db.tenant_lifecycle (tenant_id, slug, event) values (tenant, slug_of, event);
      return event;
    end $$`,
})

/**
 * Whether this transaction may delete `tenant`'s audit rows: the owner's (or a superuser's), naming
 * the tenant in skills_db.deleting_tenant, while the tenant is suspended. The app role is no member
 * of the owner, so no setting of its own lets it.
 */
const beingDeleted = databaseFunction({
  signature: 'skills_db.tenant_being_deleted(text)',
  definition: sql`
    create or replace function skills_db.tenant_being_deleted(tenant text) returns boolean
    language plpgsql stable security definer
    set search_path = pg_catalog, pg_temp
    as $$
    begin
      return pg_has_role(session_user, current_user, 'MEMBER')
        and current_setting('skills_db.deleting_tenant', true) = tenant
        and exists (select 1 from public.tenants t where t.id = tenant and not t.is_active);
    end $$`,
})

/** Whether this transaction imports `tenant`'s audit rows as exported: the owner's, naming the tenant in skills_db.importing_tenant. */
const beingImported = databaseFunction({
  signature: 'skills_db.tenant_being_imported(text)',
  definition: sql`
    create or replace function skills_db.tenant_being_imported(tenant text) returns boolean
    language plpgsql stable security definer
    set search_path = pg_catalog, pg_temp
    as $$
    begin
      return pg_has_role(session_user, current_user, 'MEMBER')
        and current_setting('skills_db.importing_tenant', true) = tenant;
    end $$`,
})

const appendOnlyBody = (table: 'audit_logs' | 'audit_signatures', deletable: boolean) => sql`
  create or replace function ${sql.raw(`public.${table}_append_only`)}() returns trigger language plpgsql
  set search_path = pg_catalog, pg_temp as $$
  begin
    ${deletable ? sql.raw(`if tg_op = 'DELETE' and current_setting('skills_db.deleting_tenant', true) = old.tenant_id then
      if skills_db.tenant_being_deleted(old.tenant_id) then
        return old;
      end if;
    end if;`) : sql``}
    raise exception '% is append-only: % is not allowed', tg_table_name, tg_op
      using errcode = 'insufficient_privilege';
  end $$`

const appendOnlyButDeletedTenants = (['audit_logs', 'audit_signatures'] as const).map((table) => replacedFunction({
  signature: `public.${table}_append_only()`,
  definition: appendOnlyBody(table, true),
  previous: appendOnlyBody(table, false),
}))

// 0011's canonical row text, which the chain's hashes are of.
const field = (expression: string) => `skills_db.audit_field(${expression})`
const ROW_TEXT = [
  'new.id::text', 'new.tenant_id', 'new.seq::text', '((extract(epoch from new.created_at) * 1000000)::bigint)::text',
  'new.actor_id', 'new.action', 'new.resource_type', 'new.resource_id', 'new.ip_address', 'new.metadata::text',
].map(field).join(' || ')

const stampBody = (importing: boolean) => sql`
  create or replace function skills_db.audit_logs_stamp() returns trigger
  language plpgsql security definer
  set search_path = pg_catalog, pg_temp
  as $$
  declare
    head record;
    entered text;
  begin
    ${importing ? sql.raw(`if current_setting('skills_db.importing_tenant', true) = new.tenant_id then
     if skills_db.tenant_being_imported(new.tenant_id) then
      -- A row as exported: its id, time and hashes kept, and checked to continue the chain.
      select h.seq, h.row_hash into head from skills_db.audit_chain_heads h where h.tenant_id = new.tenant_id for update;
      if new.seq is null then
        if found then
          raise exception 'imported audit row % has no seq but comes after the chain began: the file is not an export', new.id
            using errcode = 'data_corrupted';
        end if;
        return new;
      end if;
      if not found then
        insert into skills_db.audit_chain_heads (tenant_id, seq, row_hash)
          values (new.tenant_id, 0, skills_db.audit_chain_anchor(new.tenant_id));
        select h.seq, h.row_hash into head from skills_db.audit_chain_heads h where h.tenant_id = new.tenant_id for update;
      end if;
      if new.seq is distinct from head.seq + 1 or new.prev_hash is distinct from head.row_hash
         or new.row_hash is distinct from sha256(new.prev_hash || convert_to('skills-db audit v1' || ${ROW_TEXT}, 'UTF8')) then
        raise exception 'imported audit row % (seq %) does not continue the tenant''s hash chain: the file was altered', new.id, new.seq
          using errcode = 'data_corrupted';
      end if;
      update skills_db.audit_chain_heads set seq = new.seq, row_hash = new.row_hash where tenant_id = new.tenant_id;
      return new;
     end if;
    end if;`) : sql``}
    new.id := gen_random_uuid();
    -- A row the app role may not write (another tenant's, or with no tenant entered) is left for row
    -- security to refuse: it never takes, nor waits for, another tenant's head. The owner, its
    -- members and superusers write for any tenant. current_tenant() is IMMUTABLE for the planner
    -- (0008), so it is asked afresh, not from a plan this function keeps.
    if not pg_has_role(session_user, current_user, 'USAGE') then
      execute 'select tenant_context.current_tenant()' into entered;
      if coalesce(entered, '') = '' or new.tenant_id is distinct from entered then
        new.created_at := now();
        return new;
      end if;
    end if;
    select h.seq, h.row_hash into head from skills_db.audit_chain_heads h where h.tenant_id = new.tenant_id for update;
    if not found then
      insert into skills_db.audit_chain_heads (tenant_id, seq, row_hash)
        values (new.tenant_id, 0, skills_db.audit_chain_anchor(new.tenant_id)) on conflict (tenant_id) do nothing;
      select h.seq, h.row_hash into head from skills_db.audit_chain_heads h where h.tenant_id = new.tenant_id for update;
    end if;
    new.created_at := clock_timestamp();
    new.seq := head.seq + 1;
    new.prev_hash := head.row_hash;
    new.row_hash := sha256(new.prev_hash || convert_to('skills-db audit v1' || ${sql.raw(ROW_TEXT)}, 'UTF8'));
    update skills_db.audit_chain_heads set seq = new.seq, row_hash = new.row_hash where tenant_id = new.tenant_id;
    return new;
  end $$`

const stampKeepsImportedRows = replacedFunction({
  signature: 'skills_db.audit_logs_stamp()',
  definition: stampBody(true),
  previous: stampBody(false),
})

/** An imported row's actor may be a user deleted since: the history is kept as it was. */
const actorBody = (importing: boolean) => sql`
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
    end if;${importing ? sql.raw(`
    if current_setting('skills_db.importing_tenant', true) = new.tenant_id then
      if skills_db.tenant_being_imported(new.tenant_id) then
        return null;
      end if;
    end if;`) : sql``}
    perform set_config('skills_db.all_tenants', 'on', true);
    known := exists (select 1 from public.users u where u.id = new.actor_id and u.tenant_id = new.tenant_id);
    perform set_config('skills_db.all_tenants', coalesce(was, ''), true);
    if not known then
      raise exception 'audit actor % is not a user of tenant %', new.actor_id, new.tenant_id
        using errcode = 'foreign_key_violation';
    end if;
    return null;
  end $$`

const actorKeepsImportedRows = replacedFunction({
  signature: 'skills_db.audit_logs_actor_of_own_tenant()',
  definition: actorBody(true),
  previous: actorBody(false),
})

const steps: Step[] = [
  guardDown('no tenant lifecycle recorded', (db) =>
    refuseDataLoss(db, 'rolling back 0020 drops the log of tenants created, suspended, activated and deleted', async () => {
      const { rows } = await sql`select 1 from skills_db.tenant_lifecycle limit 1`.execute(db).catch(() => ({ rows: [] }))
      return rows.length > 0
    })),
  privateTables,
  index({ table: 'tenants', name: 'tenants_domain_unique_internal', columns: ['domain'], unique: true, collate: 'skills_db.internal' }),
  lifecycleSigned,
  beingDeleted,
  beingImported,
  createTenant,
  resolveTenant,
  setTenantActive,
  ...appendOnlyButDeletedTenants,
  stampKeepsImportedRows,
  actorKeepsImportedRows,
]

export const up = (db: Kysely<any>) => applySteps(db, steps)
export const down = (db: Kysely<any>) => revertSteps(db, steps)
