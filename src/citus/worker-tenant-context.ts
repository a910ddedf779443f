import { sql } from 'kysely'

/**
 * The tenant context as Citus needs it. The policies run on the workers, against each shard, in
 * sessions of their own: they have no `currval` of the coordinator's session (0008's mark) and see
 * only settings that `SET LOCAL` propagated (citus.propagate_set_commands = 'local'; set_config()
 * is not propagated). So on a distributed database:
 *
 * - challenge() first makes this transaction a distributed one (a statement that needs remote
 *   transaction blocks), then returns `<gpid>:<distributed transaction number>`: the coordinator
 *   backend's global pid and its distributed transaction, which every worker sees for this
 *   transaction (citus_backend_gpid(), get_current_transaction_id()).
 * - enter() checks the app's signature of that challenge as 0008's does, then SET LOCALs the
 *   tenant, the mark that it entered, and the signature itself, which reach the workers.
 * - current_tenant(), on every node, accepts the tenant only when the signature is the HMAC, under
 *   a key of skills_db.tenant_context_keys (a reference table: a copy on every node), of the tenant
 *   and of the gpid and distributed transaction it runs in. A signature replayed in another
 *   transaction, or from another coordinator session, does not match.
 *
 * Read from Citus's source, not yet run (no Citus on this project's machines; test/citus.test.ts):
 * - enter() propagates its SET LOCALs itself (citus.propagate_set_commands in its own SET clause),
 *   at once to the remote transactions open and to those opened later in the transaction, so a
 *   pooled session opened before distribute set the role's default needs no reconnect.
 * - current_tenant() reads the key table, a reference table, from inside a query on a shard, which
 *   Citus refuses ("cannot execute a distributed query from a query on a shard") unless
 *   citus.allow_nested_distributed_execution is on: its own SET clause turns it on for that read.
 * - What remains of replay: app_user may call assign_distributed_transaction_id (the coordinator
 *   calls it on the workers as app_user, so it cannot be revoked), and the transaction number starts
 *   again after a restart. A leaked signature could be replayed in a later transaction of the same
 *   coordinator backend that was given the same number; signatures are never logged by skills-db
 *   (bound parameters), but a worker's log_statement would log the propagated SET LOCAL.
 *
 * It costs an HMAC and a key lookup per shard statement, which a distributed query's network hop
 * dwarfs.
 */
export const CITUS_CHALLENGE = sql`
  create or replace function tenant_context.challenge() returns text
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  as $$
  declare
    tx record;
  begin
    -- With the coordinator in the metadata it holds placements (of the reference tables, here read
    -- by enter()), which Citus reads by local execution; EXPLAIN later in the transaction then needs
    -- a connection to this node, which Citus refuses once local execution has been used ("cannot
    -- execute command because a local execution has accessed a placement in the transaction").
    -- Connections throughout, for this transaction, on this node only: set_config(), which Citus
    -- does not propagate (on the workers, triggers on shards reach colocated shards by local
    -- execution, and only so).
    perform set_config('citus.enable_local_execution', 'off', true);
    -- Reading a distributed table in a transaction block opens remote transactions, which assigns
    -- this transaction its distributed id.
    perform 1 from public.site_settings s where s.tenant_id = '' limit 1;
    select * into tx from get_current_transaction_id();
    return citus_backend_gpid() || ':' || tx.initiator_node_identifier || '.' || tx.transaction_number;
  end $$`

export const CITUS_ENTER = sql`
  create or replace function tenant_context.enter(tenant text, signature text) returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set citus.propagate_set_commands = 'local'
  as $$
  declare
    signed_with text := split_part(signature, ':', 1);
    pads record;
    active boolean;
    tx record;
  begin
    if not exists (select 1 from tenant_context.node_keys) then
      raise exception 'the database holds no tenant context key'
        using errcode = 'insufficient_privilege',
          hint = 'run the migrator with SKILLS_DB_TENANT_KEYS (or tenantKeys) listing the key the app signs with';
    end if;
    select k.inner_pad, k.outer_pad into pads from tenant_context.node_keys k where k.key_id = signed_with;
    if not found then
      raise exception 'the tenant context is signed with key "%", which the database does not hold', left(signed_with, 64)
        using errcode = 'insufficient_privilege',
          hint = 'add it to the migrator''s SKILLS_DB_TENANT_KEYS (or tenantKeys), or give the app a key listed there';
    end if;
    select * into tx from get_current_transaction_id();
    if tx.transaction_number is null or tx.transaction_number = 0
       or encode(sha256(pads.outer_pad || sha256(pads.inner_pad || convert_to(tenant || ':' || citus_backend_gpid() || ':'
           || tx.initiator_node_identifier || '.' || tx.transaction_number, 'UTF8'))), 'hex')
         is distinct from substr(signature, length(signed_with) + 2) then
      raise exception 'the tenant context signature is not valid for this transaction'
        using errcode = 'insufficient_privilege',
          hint = 'the app''s key and the database''s copy of it differ, or the context was signed for another transaction';
    end if;
    select t.is_active into active from public.tenants t where t.id = tenant;
    if active is not true then
      raise exception 'unknown or inactive tenant "%"', left(tenant, 64) using errcode = 'insufficient_privilege';
    end if;
    -- SET LOCAL, not set_config(): Citus propagates these statements to the workers.
    execute format('set local app.current_tenant_id = %L', tenant);
    execute format('set local tenant_context.entered = %L', 'on');
    execute format('set local tenant_context.signature = %L', signature);
  end $$`

export const CITUS_CURRENT_TENANT = sql`
  create or replace function tenant_context.current_tenant() returns text
  language plpgsql immutable parallel safe security definer
  set search_path = pg_catalog, pg_temp
  as $$
  declare
    tenant text := current_setting('app.current_tenant_id', true);
    signature text := current_setting('tenant_context.signature', true);
    signed_with text := split_part(signature, ':', 1);
    tx record;
  begin
    -- '' with no tenant entered, as 0014's: no tenant has that id, and it stays an index condition.
    if current_setting('tenant_context.entered', true) is distinct from 'on' or tenant is null or signature is null then
      return '';
    end if;
    select * into tx from get_current_transaction_id();
    if exists (select 1 from tenant_context.node_keys k where k.key_id = signed_with
        and encode(sha256(k.outer_pad || sha256(k.inner_pad || convert_to(tenant || ':' || citus_backend_gpid() || ':'
          || tx.initiator_node_identifier || '.' || tx.transaction_number, 'UTF8'))), 'hex') = substr(signature, length(signed_with) + 2)) then
      return tenant;
    end if;
    return '';
  end $$`


/**
 * The tenant keys as every node reads them: a plain table of each node's own, out of Citus's
 * metadata, copied from skills_db.tenant_context_keys (the reference table the migrator writes).
 * current_tenant() runs inside queries on shards, and EXPLAIN plans them on the workers: a read of
 * the reference table from there is a distributed read, which Citus ran over a new connection to
 * the same node inside the same distributed transaction ("the backend has already been assigned a
 * transaction id"): EXPLAIN printed "Could not get remote plan" and COMMIT failed. A local table
 * is read like any other.
 */
export const CITUS_NODE_KEYS = sql`
  create table if not exists tenant_context.node_keys (key_id text primary key, inner_pad bytea not null, outer_pad bytea not null)`

/**
 * Copies the keys onto every node: the coordinator's own table here, each worker's from its own
 * placement of the reference table (so no key travels in a statement a worker might log). The
 * migrator calls it after storing keys; until it has, a key just added is refused.
 */
export const CITUS_COPY_KEYS = sql`
  create or replace function tenant_context.copy_keys_to_nodes() returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  as $$
  declare
    failed text;
  begin
    delete from tenant_context.node_keys;
    insert into tenant_context.node_keys select key_id, inner_pad, outer_pad from skills_db.tenant_context_keys;
    select string_agg(format('%s:%s: %s', nodename, nodeport, result), '; ') into failed
    from run_command_on_workers($c$
      create table if not exists tenant_context.node_keys (key_id text primary key, inner_pad bytea not null, outer_pad bytea not null);
      revoke all on tenant_context.node_keys from public;
      delete from tenant_context.node_keys;
      insert into tenant_context.node_keys select key_id, inner_pad, outer_pad from skills_db.tenant_context_keys$c$)
    where not success;
    if failed is not null then
      raise exception 'could not copy the tenant keys onto every worker: %', failed
        using hint = 'run select tenant_context.copy_keys_to_nodes() as the owner once every worker answers';
    end if;
  end $$`
