import { sql, type Kysely, type RawBuilder } from 'kysely'
import { analyzed } from '../online/analyze.ts'
import { databaseFunction } from '../online/database-function.ts'
import { withLockRetry } from '../online/lock-retry.ts'
import { applySteps, revertSteps, type Step } from '../online/step.ts'

// Frozen: the tables, policy conditions and function bodies below are this migration's own, as of
// when it was written (see README.md in this folder).
const TABLES = [
  'users', 'skills', 'ratings', 'usage_events', 'skill_versions',
  'skill_embeddings', 'skill_reviews', 'api_keys', 'site_settings', 'audit_logs',
] as const

/**
 * Until now the tenant was whatever `app.current_tenant_id` said, and any SQL of the application
 * role can set that. From here on it is the tenant that `tenant_context.enter` accepted in this
 * session and this transaction, and only a caller holding the app's key can make it accept one:
 *
 * 1. withTenant asks for a challenge (this backend's pid and this transaction's start), signs
 *    `<tenant>:<challenge>` with HMAC-SHA256 under its key, and calls `enter(tenant, signature)`.
 * 2. `enter` (SECURITY DEFINER) checks the signature against the database's copy of the key, which
 *    the application role cannot read, and the tenant's existence and `is_active`. It then records
 *    the tenant in this session's value of an unlogged sequence, `setval`, which the application role
 *    may not call: a hash of the tenant and the transaction's start. It also sets the setting, which
 *    the column defaults read.
 * 3. Every policy compares `tenant_id` with `current_tenant()`: the setting's tenant when this
 *    session's sequence value is that tenant's hash for this transaction, else NULL (no row). A
 *    setting changed by injected SQL, a context replayed in another transaction or session, or a
 *    session that never entered, all give NULL.
 *
 * `current_tenant()` is declared IMMUTABLE so that the planner evaluates it once, while it plans the
 * statement, and puts the result in the plan as a constant (an index condition, like a literal
 * filter). That is what keeps its cost at one call per statement (a scalar subquery, the other way
 * to do it once, costs about as much again). It is true within one transaction only, so a plan the
 * application role made in one transaction must not run in another: withTenant drops every plan
 * the role can keep (prepared statements, cursors, functions of its own in pg_temp) before the
 * connection goes back to the pool, and no function it may call keeps plans that read tenant
 * tables as the role (test/security.test.ts lists them).
 */
const SESSION_BOUND = sql`tenant_id = tenant_context.current_tenant()`
/** What 0005 and 0006 wrote. */
const NAMED = sql`tenant_id = nullif(current_setting('app.current_tenant_id', true), '')`

/**
 * The keys withTenant signs with, as HMAC-SHA256 pads (the key xor 0x36…, the key xor 0x5c…), so
 * the check needs only the built-in sha256(). One row per key; two during a rotation. In the
 * migrator's schema, which the application role cannot even look into.
 */
const keys: Step = {
  name: 'table skills_db.tenant_context_keys',
  async up(db) {
    await sql`create table if not exists skills_db.tenant_context_keys (
      key_id text primary key, inner_pad bytea not null, outer_pad bytea not null, added_at timestamptz not null default now())`.execute(db)
    await sql`revoke all on skills_db.tenant_context_keys from public`.execute(db)
  },
  async down(db) {
    await sql`drop table if exists skills_db.tenant_context_keys`.execute(db)
  },
}

/**
 * Where `enter` leaves its mark: `currval` is per session, and only `setval`/`nextval` change it,
 * which need privileges the application role does not have. Unlogged: no WAL, and no transaction
 * id, for a value that means nothing after the transaction (PostgreSQL 15+).
 */
const mark: Step = {
  name: 'sequence tenant_context.session_tenant',
  async up(db) {
    await sql`create unlogged sequence if not exists tenant_context.session_tenant
      as bigint minvalue -9223372036854775808 maxvalue 9223372036854775807 no cycle`.execute(db)
    await sql`revoke all on tenant_context.session_tenant from public`.execute(db)
  },
  async down(db) {
    await sql`drop sequence if exists tenant_context.session_tenant`.execute(db)
  },
}

/**
 * What withTenant signs besides the tenant: this backend and the start of this transaction, in µs.
 * No secret and no privilege in it, so no SET clause: a SET clause keeps a SQL function from being
 * inlined, and every name is qualified instead.
 */
const challenge = databaseFunction({
  signature: 'tenant_context.challenge()',
  executeBy: 'app role',
  definition: sql`
    create or replace function tenant_context.challenge() returns text
    language sql stable
    as $$ select pg_catalog.pg_backend_pid()::pg_catalog.text operator(pg_catalog.||) ':'
      operator(pg_catalog.||) ((pg_catalog.date_part('epoch', pg_catalog.now()) operator(pg_catalog.*) 1000000)::pg_catalog.int8)::pg_catalog.text $$`,
})

const enter = databaseFunction({
  signature: 'tenant_context.enter(text, text)',
  executeBy: 'app role',
  definition: sql`
    create or replace function tenant_context.enter(tenant text, signature text) returns void
    language plpgsql volatile security definer
    set search_path = pg_catalog, pg_temp
    as $$
    declare
      started bigint := (date_part('epoch', now()) * 1000000)::bigint;
      signed_with text := split_part(signature, ':', 1);
      pads record;
      active boolean;
    begin
      if not exists (select 1 from skills_db.tenant_context_keys) then
        raise exception 'the database holds no tenant context key'
          using errcode = 'insufficient_privilege',
            hint = 'run the migrator with SKILLS_DB_TENANT_KEYS (or tenantKeys) listing the key the app signs with';
      end if;
      select k.inner_pad, k.outer_pad into pads from skills_db.tenant_context_keys k where k.key_id = signed_with;
      if not found then
        raise exception 'the tenant context is signed with key "%", which the database does not hold', left(signed_with, 64)
          using errcode = 'insufficient_privilege',
            hint = 'add it to the migrator''s SKILLS_DB_TENANT_KEYS (or tenantKeys), or give the app a key listed there';
      end if;
      if encode(sha256(pads.outer_pad || sha256(pads.inner_pad
           || convert_to(tenant || ':' || pg_backend_pid() || ':' || started, 'UTF8'))), 'hex')
         is distinct from substr(signature, length(signed_with) + 2) then
        raise exception 'the tenant context signature is not valid for this transaction'
          using errcode = 'insufficient_privilege',
            hint = 'the app''s key and the database''s copy of it differ, or the context was signed for another transaction';
      end if;
      select t.is_active into active from public.tenants t where t.id = tenant;
      if active is not true then
        raise exception 'unknown or inactive tenant "%"', left(tenant, 64) using errcode = 'insufficient_privilege';
      end if;
      perform setval('tenant_context.session_tenant', hashtextextended(tenant, started));
      perform set_config('app.current_tenant_id', tenant, true);
      perform set_config('tenant_context.entered', 'on', true);
    end $$`,
})

/**
 * The tenant of this transaction, or NULL. See the top of this file for why it is IMMUTABLE, and
 * PARALLEL SAFE: it runs in the planner of the session that entered, never in a parallel worker.
 * `tenant_context.entered` only spares a session that never entered currval's error; forging it
 * gets that error instead of NULL.
 *
 * It runs while every statement of the app role is planned, so it has no SET clause (setting and
 * restoring search_path on each call costs more than the rest of it) and names everything, types
 * and operators included, by schema: a search_path or a pg_temp look-alike of the caller's changes
 * nothing in it (functions and operators are never looked up in pg_temp, and nobody but the owner
 * creates in pg_catalog).
 */
const currentTenant = databaseFunction({
  signature: 'tenant_context.current_tenant()',
  executeBy: 'app role',
  definition: sql`
    create or replace function tenant_context.current_tenant() returns text
    language plpgsql immutable parallel safe security definer
    as $$
    declare
      tenant pg_catalog.text := pg_catalog.current_setting('app.current_tenant_id', true);
    begin
      if pg_catalog.current_setting('tenant_context.entered', true) operator(pg_catalog.=) 'on' then
        if pg_catalog.currval('tenant_context.session_tenant'::pg_catalog.regclass) operator(pg_catalog.=) pg_catalog.hashtextextended(tenant,
             (pg_catalog.date_part('epoch', pg_catalog.now()) operator(pg_catalog.*) 1000000)::pg_catalog.int8) then
          return tenant;
        end if;
      end if;
      return null;
    end $$`,
})

const policy = (table: string, condition: RawBuilder<unknown>) => async (db: Kysely<any>) => {
  await withLockRetry(db, table, (trx) =>
    sql`alter policy tenant_isolation on ${sql.table(table)} using (${condition}) with check (${condition})`.execute(trx))
}

const policies: Step[] = TABLES.map((table) => ({
  name: `tenant_isolation on ${table}: the entered tenant`,
  up: policy(table, SESSION_BOUND),
  down: policy(table, NAMED),
}))

/** The app role's own row of tenants (0007), now the entered tenant's. */
const ownTenant = (condition: RawBuilder<unknown>) => async (db: Kysely<any>) => {
  await withLockRetry(db, 'tenants', (trx) =>
    sql`alter policy own_tenant on tenants using (${condition})`.execute(trx))
}

const steps: Step[] = [
  keys,
  mark,
  challenge,
  enter,
  currentTenant,
  ...policies,
  {
    name: 'own_tenant on tenants: the entered tenant',
    up: ownTenant(sql`id = tenant_context.current_tenant()`),
    down: ownTenant(sql`id = nullif(current_setting('app.current_tenant_id', true), '')`),
  },
  // The planner now sees the tenant as a constant and estimates by tenant_id's statistics, which
  // 0003's catalog default left it without (no row changed, so autovacuum never analyzed for it).
  analyzed(TABLES),
]

export const up = (db: Kysely<any>) => applySteps(db, steps)
export const down = (db: Kysely<any>) => revertSteps(db, steps)
