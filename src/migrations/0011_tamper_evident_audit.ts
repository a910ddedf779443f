import { sql, type Kysely } from 'kysely'
import { alterTable } from '../online/alter-table.ts'
import { appendOnly } from '../online/append-only.ts'
import { appRoleName } from '../online/app-role.ts'
import { index } from '../online/concurrent-index.ts'
import { guardDown, refuseDataLoss } from '../online/data-loss-guard.ts'
import { databaseFunction } from '../online/database-function.ts'
import { grant } from '../online/grant.ts'
import { withLockRetry } from '../online/lock-retry.ts'
import { rowSecurity } from '../online/row-security.ts'
import { applySteps, revertSteps, type Step } from '../online/step.ts'
import { ownerIfConfinable } from '../online/table-owner.ts'
import { triggerFiresAlways } from '../online/trigger.ts'

// Frozen: the columns, function bodies, tables and policies below are this migration's own, as of
// when it was written (see README.md in this folder).

/**
 * The audit trail becomes tamper-evident: each tenant's rows form a hash chain, and the app signs
 * what it appended with a key the database never sees.
 *
 * - Each new row gets `seq` (1, 2, … per tenant), `prev_hash` (the tenant's previous row's
 *   `row_hash`) and `row_hash` = sha256(prev_hash || the row's canonical text). The trigger takes
 *   the tenant's head row in skills_db.audit_chain_heads FOR UPDATE: one appender per tenant at a
 *   time, until its transaction ends; other tenants never wait. `created_at` is the clock once the
 *   head is held, so it never goes back along a chain.
 * - The rows written before this migration (no seq) are covered by the chain's anchor: the hash
 *   its first row links to digests every one of them.
 * - `recordAudit` checks the row the database returns against what it sent, computes the hash
 *   itself and signs (tenant, seq, row_hash, its own clock) with SKILLS_DB_AUDIT_KEY into
 *   audit_signatures, in the same transaction. `skills-db audit verify` recomputes everything.
 *
 * The canonical text (the verifier builds the same): 'skills-db audit v1', then for each of id,
 * tenant_id, seq, created_at (µs since the epoch), actor_id, action, resource_type, resource_id,
 * ip_address and metadata (jsonb's text): '-' for NULL, else its length in bytes, ':', the text.
 */
const field = (expression: string) => `skills_db.audit_field(${expression})`
const ROW_TEXT = [
  'new.id::text', 'new.tenant_id', 'new.seq::text', '((extract(epoch from new.created_at) * 1000000)::bigint)::text',
  'new.actor_id', 'new.action', 'new.resource_type', 'new.resource_id', 'new.ip_address', 'new.metadata::text',
].map(field).join(' || ')
const LEGACY_ROW_TEXT = [
  'a.id::text', '((extract(epoch from a.created_at) * 1000000)::bigint)::text',
  'a.actor_id', 'a.action', 'a.resource_type', 'a.resource_id', 'a.ip_address', 'a.metadata::text',
].map(field).join(' || ')

const chainColumns: Step = {
  name: 'audit_logs: seq, prev_hash, row_hash',
  up: (db) => alterTable(db, 'audit_logs', [
    sql`add column if not exists seq bigint`,
    sql`add column if not exists prev_hash bytea`,
    sql`add column if not exists row_hash bytea`,
  ]),
  down: (db) => alterTable(db, 'audit_logs', [
    sql`drop column if exists seq`,
    sql`drop column if exists prev_hash`,
    sql`drop column if exists row_hash`,
  ]),
}

/** One row per tenant: the last seq and row_hash of its chain (seq 0: the anchor). The migrator's schema: the app role cannot see it. */
const heads: Step = {
  name: 'table skills_db.audit_chain_heads',
  async up(db) {
    await sql`create table if not exists skills_db.audit_chain_heads (
      tenant_id text primary key, seq bigint not null, row_hash bytea not null)`.execute(db)
    await sql`revoke all on skills_db.audit_chain_heads from public`.execute(db)
  },
  down: async (db) => void (await sql`drop table if exists skills_db.audit_chain_heads`.execute(db)),
}

const auditField = databaseFunction({
  signature: 'skills_db.audit_field(text)',
  definition: sql`
    create or replace function skills_db.audit_field(value text) returns text
    language sql immutable parallel safe
    as $$ select case when value is null then '-' else pg_catalog.octet_length(value)::pg_catalog.text operator(pg_catalog.||) ':' operator(pg_catalog.||) value end $$`,
})

/** The hash a tenant's chain starts from: a digest of its rows written before the chain existed (none: of its id alone). */
const anchor = databaseFunction({
  signature: 'skills_db.audit_chain_anchor(text)',
  definition: sql`
    create or replace function skills_db.audit_chain_anchor(tenant text) returns bytea
    language plpgsql volatile security definer
    set search_path = pg_catalog, pg_temp
    as $$
    declare
      was text := current_setting('skills_db.all_tenants', true);
      digest bytea;
    begin
      perform set_config('skills_db.all_tenants', 'on', true);
      select sha256(convert_to('skills-db audit anchor v1' || skills_db.audit_field(tenant)
               || coalesce(string_agg(${sql.raw(LEGACY_ROW_TEXT)}, '' order by a.created_at, a.id), ''), 'UTF8'))
        into digest
      from public.audit_logs a where a.tenant_id = tenant and a.seq is null;
      perform set_config('skills_db.all_tenants', coalesce(was, ''), true);
      return digest;
    end $$`,
})

/** 0009's stamp: the database sets id and time, nothing else. */
const STAMP_0009 = sql`
  create or replace function skills_db.audit_logs_stamp() returns trigger
  language plpgsql security definer
  set search_path = pg_catalog, pg_temp
  as $$
  begin
    new.id := gen_random_uuid();
    new.created_at := now();
    return new;
  end $$`

const STAMP_AND_CHAIN = sql`
  create or replace function skills_db.audit_logs_stamp() returns trigger
  language plpgsql security definer
  set search_path = pg_catalog, pg_temp
  as $$
  declare
    head record;
    entered text;
  begin
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

/**
 * Swapped while no insert is under way (SHARE ROW EXCLUSIVE waits for them, with the lock timeout):
 * every row written without a seq is then committed before any anchor is computed from them.
 */
const stampAndChain: Step = {
  name: 'audit stamp: id, time, and the chain',
  up: (db) => withLockRetry(db, 'audit_logs', async (trx) => {
    await sql`lock table audit_logs in share row exclusive mode`.execute(trx)
    await STAMP_AND_CHAIN.execute(trx)
  }),
  down: (db) => withLockRetry(db, 'audit_logs', async (trx) => {
    await sql`lock table audit_logs in share row exclusive mode`.execute(trx)
    await STAMP_0009.execute(trx)
  }),
}

/** Every tenant with rows from before the chain gets its anchor now, not on its first request. */
const anchors: Step = {
  name: 'anchors of the tenants with audit rows',
  async up(db) {
    await sql`insert into skills_db.audit_chain_heads (tenant_id, seq, row_hash)
      select t.tenant_id, 0, skills_db.audit_chain_anchor(t.tenant_id)
      from (select distinct tenant_id from audit_logs where seq is null) t
      on conflict (tenant_id) do nothing`.execute(db)
  },
  async down() {},
}

/** The app's signatures of what it appended: append-only, each tenant its own, every row of the chain at most once. */
const signatures: Step = {
  name: 'table audit_signatures',
  up: (db) => withLockRetry(db, 'audit_logs', async (trx) => {
    await sql`create table if not exists audit_signatures (
      tenant_id text not null default nullif(current_setting('app.current_tenant_id', true), ''),
      seq bigint not null,
      key_id text not null,
      signature text not null,
      signed_at timestamptz not null,
      primary key (tenant_id, seq),
      foreign key (tenant_id, seq) references audit_logs (tenant_id, seq))`.execute(trx)
  }),
  down: async (db) => void (await sql`drop table if exists audit_signatures`.execute(db)),
}

/** As the nine tables: the entered tenant's rows; a row with no tenant entered is refused (WITH CHECK NULL). */
const ENTERED = sql`tenant_id = tenant_context.current_tenant()`
const ENTERED_TO_WRITE = sql`tenant_id = nullif(tenant_context.current_tenant(), '')`

const steps: Step[] = [
  chainColumns,
  heads,
  auditField,
  anchor,
  // (tenant_id, seq): the chain's order, what the verifier reads by, and what a signature references.
  index({ table: 'audit_logs', name: 'audit_logs_tenant_seq_unique', columns: ['tenant_id', 'seq'], unique: true }),
  stampAndChain,
  anchors,
  signatures,
  appendOnly('audit_signatures'),
  triggerFiresAlways('audit_signatures', 'no_update_or_delete'),
  triggerFiresAlways('audit_signatures', 'no_truncate'),
  rowSecurity('audit_signatures', [
    { name: 'tenant_isolation', to: async (db) => [await appRoleName(db)], condition: ENTERED, check: ENTERED_TO_WRITE },
    { name: 'owner_all_tenants', to: ownerIfConfinable('audit_signatures'), condition: sql`current_setting('skills_db.all_tenants', true) = 'on'` },
  ]),
  grant('audit_signatures', ['select', 'insert']),
  guardDown('the chain is empty', (db) =>
    refuseDataLoss(db, 'rolling back 0011 drops the audit trail\'s hash chain and the app\'s signatures of it', async () => {
      const { rows } = await sql`select 1 from audit_logs where seq is not null limit 1`.execute(db).catch(() => ({ rows: [] }))
      return rows.length > 0
    })),
]

export const up = (db: Kysely<any>) => applySteps(db, steps)
export const down = (db: Kysely<any>) => revertSteps(db, steps)
