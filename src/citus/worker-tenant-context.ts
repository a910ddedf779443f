import { sql } from 'kysely'

/**
 * The tenant context as Citus needs it. The policies run on the workers, against each shard, in
 * sessions of their own: they have no `currval` of the coordinator's session (0008's mark) and see
 * only settings that `SET LOCAL` propagated (citus.propagate_set_commands = 'local'; set_config()
 * is not propagated).
 *
 * What the app role can forge on any node, and so proves nothing by itself (an outside review
 * replayed another tenant's leaked context with it): the settings (any SQL can SET them, and Citus
 * pushes functions in a query down to the shards); the Citus identity of a transaction (its
 * `citus_backend_gpid()` comes from `application_name = 'citus_internal gpid=…'`, and
 * `assign_distributed_transaction_id()` is callable by anyone, since the coordinator calls it as the
 * session's role). What it cannot forge: its own backend's pid and transaction start, the sequence
 * value only enter() sets (0008's mark), and the role a backend logged in as.
 *
 * - challenge(), on the coordinator only, makes this transaction a distributed one (a read that
 *   needs remote transaction blocks), then returns `<pid>:<transaction start, µs>:<gpid>:<node>.<number>`:
 *   this backend, this transaction, and the Citus identity every node sees for it.
 * - enter(), on the coordinator only, checks the app's HMAC of `<tenant>:<challenge>` against the
 *   live values, so a signature is good in the backend and transaction it was made for and nowhere
 *   else. It then leaves 0008's mark (the sequence value) for this backend, SET LOCALs the tenant,
 *   the challenge and the signature for the nodes, and leaves a witness on the node that holds the
 *   tenant's shards and on the node the transaction reads `tenants` (a reference table) from: a
 *   connection of the owner's (enter() runs as the owner, and Citus connects as the current user)
 *   in this distributed transaction, holding a shared advisory lock on (WITNESS, hashtext(tenant))
 *   until it ends.
 * - current_tenant(): in the backend enter() ran in, the tenant when the mark is there (as on one
 *   server). In a node's connection of a distributed transaction, the tenant when the signature is
 *   the HMAC of the tenant and the challenge, the challenge names this transaction's Citus identity,
 *   and this node has a live witness: a backend of the owner's role in the same transaction holding
 *   the tenant's lock. The app role cannot make one: its own backends are not the owner's, and the
 *   owner's are opened only by functions whose SQL it does not choose, and the witness only by
 *   enter() after its check. So a context that leaked (a worker's statement log shows it) is dead
 *   once its transaction ends, however its identity is forged.
 *
 * What is left: the replay of a context while its own transaction still runs, on the node of the
 * tenant's shards (the leak would have to be read and replayed within the request's milliseconds).
 *
 * It costs, per request, the witness's read on the tenant's node (one shard, in the transaction's
 * first round trip there), and per statement on a shard, an HMAC and a look at the node's backends.
 */
/** The advisory lock class of the witness enter() leaves on the tenant's node: hashtext('skills_db tenant_context witness'). */
export const WITNESS_LOCK = 1477696139
/** Recorded (skills_db.settings) while distribute moves tables online: enter() then leaves a witness on the coordinator too. */
export const ONLINE_MARKER = 'citus_online_distribution'
/** The Citus local table (its one shard on the coordinator) enter() reads for that witness. */
export const COORDINATOR_WITNESS = 'skills_db.coordinator_witness'

export const CITUS_CHALLENGE = sql`
  create or replace function tenant_context.challenge() returns text
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  as $$
  declare
    tx record;
  begin
    if not citus_is_coordinator() then
      raise exception 'the tenant context is entered on the coordinator only'
        using errcode = 'insufficient_privilege', hint = 'connect the app to the Citus coordinator';
    end if;
    -- With the coordinator in the metadata it holds placements (of the reference tables, here read
    -- by enter()), which Citus reads by local execution; EXPLAIN later in the transaction then needs
    -- a connection to this node, which Citus refuses once local execution has been used ("cannot
    -- execute command because a local execution has accessed a placement in the transaction").
    -- Connections throughout, for this transaction, on this node only: set_config(), which Citus
    -- does not propagate (on the workers, triggers on shards reach colocated shards by local
    -- execution, and only so). The witness on this node, when it holds the tenant's shards, is
    -- such a connection too.
    perform set_config('citus.enable_local_execution', 'off', true);
    -- Reading a distributed table in a transaction block opens remote transactions, which assigns
    -- this transaction its distributed id.
    perform 1 from public.site_settings s where s.tenant_id = '' limit 1;
    select * into tx from get_current_transaction_id();
    return pg_backend_pid() || ':' || (date_part('epoch', now()) * 1000000)::bigint || ':'
      || citus_backend_gpid() || ':' || tx.initiator_node_identifier || '.' || tx.transaction_number;
  end $$`

/**
 * 0019's enter(tenant, challenge, signature) on Citus: a session's counter is not something every
 * node can check, so it refuses as a stale challenge (TC001). withTenant then asks
 * session_challenge() again, which answers NULL on Citus, and enters per transaction from then on.
 */
export const CITUS_SESSION_ENTER = sql`
  create or replace function tenant_context.enter(tenant text, challenge text, signature text) returns text
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  as $$
  begin
    raise exception 'on Citus the tenant context is entered with the challenge of its transaction'
      using errcode = 'TC001', hint = 'ask tenant_context.challenge() inside the transaction';
  end $$`

export const CITUS_ENTER = sql`
  create or replace function tenant_context.enter(tenant text, signature text) returns void
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  set citus.propagate_set_commands = 'local'
  as $$
  declare
    started bigint := (date_part('epoch', now()) * 1000000)::bigint;
    signed_with text := split_part(signature, ':', 1);
    pads record;
    active boolean;
    tx record;
    challenge text;
    nodes_signature text;
    checked record;
    witnessed boolean;
  begin
    if not citus_is_coordinator() then
      raise exception 'the tenant context is entered on the coordinator only'
        using errcode = 'insufficient_privilege', hint = 'connect the app to the Citus coordinator';
    end if;
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
    if tx.transaction_number is null or tx.transaction_number = 0 then
      -- A challenge of the single-node form (below): this transaction is not yet a distributed one.
      perform set_config('citus.enable_local_execution', 'off', true);
      perform 1 from public.site_settings s where s.tenant_id = '' limit 1;
      select * into tx from get_current_transaction_id();
    end if;
    challenge := pg_backend_pid() || ':' || started || ':' || citus_backend_gpid() || ':'
      || tx.initiator_node_identifier || '.' || tx.transaction_number;
    -- The nodes check a signature of this challenge: the app's, or, when the app signed the
    -- single-node challenge (<pid>:<start>, of a request that began while distribute replaced these
    -- functions), one made here under the same key. Either binds this backend and this
    -- transaction, which is all the app's signature proves; the nodes' check adds the witness.
    nodes_signature := encode(sha256(pads.outer_pad || sha256(pads.inner_pad || convert_to(tenant || ':' || challenge, 'UTF8'))), 'hex');
    if tx.transaction_number is null or tx.transaction_number = 0
       or substr(signature, length(signed_with) + 2) not in (nodes_signature,
         encode(sha256(pads.outer_pad || sha256(pads.inner_pad || convert_to(tenant || ':' || pg_backend_pid() || ':' || started, 'UTF8'))), 'hex')) then
      raise exception 'the tenant context signature is not valid for this transaction'
        using errcode = 'insufficient_privilege',
          hint = 'the app''s key and the database''s copy of it differ, or the context was signed for another transaction';
    end if;
    -- The witness: on the node this transaction reads the reference tables from (Citus picks the
    -- same placement of tenants for the app role's reads later in the transaction), and on the node
    -- of the tenant's shards (the read of site_settings goes to that shard alone), each over a
    -- connection of the owner's in this distributed transaction, which takes the lock there and
    -- holds it until the transaction ends (an inactive tenant's ends with the error below).
    --
    -- Tried, never waited on: any role may take advisory locks, and SQL of the app role pushed down
    -- to a node once held this one in a session of its own, which hung every later request of the
    -- tenant (outside review); now they fail at once, saying why.
    select t.is_active as active, pg_try_advisory_xact_lock_shared(${sql.lit(WITNESS_LOCK)}, hashtext(tenant)) as witnessed
      into checked from public.tenants t where t.id = tenant;
    active := checked.active;
    if active is not true then
      raise exception 'unknown or inactive tenant "%"', left(tenant, 64) using errcode = 'insufficient_privilege';
    end if;
    select bool_and(pg_try_advisory_xact_lock_shared(${sql.lit(WITNESS_LOCK)}, hashtext(tenant))) into witnessed
      from (select count(*) from public.site_settings s where s.tenant_id = tenant) shard;
    -- While distribute moves tables online (online-distribution.ts), each is for a while a Citus
    -- local table, its one shard on this node, which this transaction reads over a connection too
    -- (local execution is off): a witness on this node as well, by a table of Citus's there.
    if witnessed is true and exists (select 1 from skills_db.settings s where s.key = ${sql.lit(ONLINE_MARKER)}) then
      select bool_and(pg_try_advisory_xact_lock_shared(${sql.lit(WITNESS_LOCK)}, hashtext(tenant))) into witnessed
        from (select count(*) from ${sql.raw(COORDINATOR_WITNESS)}) w;
      -- Citus plans a write, then waits for its shard's metadata lock, which the copy takes for its
      -- last catch-up. A write planned against the Citus local table that ran after the switch was
      -- rerouted by its WHERE, where a bound tenant_id is a parameter Citus cannot read: to no
      -- shard, so it matched no row and committed (a lost update; an INSERT ... SELECT, a lost
      -- insert). So this transaction takes that lock now, before it plans anything, in the mode a
      -- write takes, for every Citus local table (the tables moving online): the copy's switch
      -- waits for it to end, and a transaction that enters meanwhile waits here and plans its
      -- statements after the switch. (Distribute made each table a Citus local table, then waited
      -- for the transactions that entered before.) In shard order, as Citus locks them.
      perform lock_shard_metadata(5, l.shards) from (select array_agg(s.shardid order by s.shardid) as shards
        from pg_dist_shard s join pg_dist_partition p on p.logicalrelid = s.logicalrelid
        where p.partmethod = 'n' and p.colocationid = 0 and p.logicalrelid <> ${sql.lit(COORDINATOR_WITNESS)}::regclass) l
        where l.shards is not null;
    end if;
    if checked.witnessed is not true or witnessed is not true then
      raise exception 'another session holds the tenant context lock of tenant "%" on a node', left(tenant, 64)
        using errcode = 'lock_not_available',
          hint = 'a session of the app role took advisory lock (${sql.raw(String(WITNESS_LOCK))}, hashtext(tenant)) on a worker: find it in pg_locks there and end it';
    end if;
    -- This backend's mark, as on one server: what current_tenant() trusts here.
    perform setval('tenant_context.session_tenant', hashtextextended(tenant, started));
    -- SET LOCAL, not set_config(): Citus propagates these statements to the nodes.
    execute format('set local app.current_tenant_id = %L', tenant);
    execute format('set local tenant_context.entered = %L', 'on');
    execute format('set local tenant_context.challenge = %L', challenge);
    execute format('set local tenant_context.signature = %L', signed_with || ':' || nodes_signature);
  end $$`

export const CITUS_CURRENT_TENANT = sql`
  create or replace function tenant_context.current_tenant() returns text
  language plpgsql immutable parallel safe security definer
  set search_path = pg_catalog, pg_temp
  as $$
  declare
    tenant text := current_setting('app.current_tenant_id', true);
    challenge text := current_setting('tenant_context.challenge', true);
    signature text := current_setting('tenant_context.signature', true);
    signed_with text := split_part(signature, ':', 1);
    gpid bigint := citus_backend_gpid();
    tx record;
  begin
    -- '' with no tenant entered, as 0014's: no tenant has that id, and it stays an index condition.
    if current_setting('tenant_context.entered', true) is distinct from 'on' or tenant is null then
      return '';
    end if;
    -- The backend enter() ran in (the coordinator's, whose global pid is its own): its mark, as on
    -- one server (also a request that entered by the single-node enter() while distribute replaced
    -- it, which set no challenge). currval() fails in a session that never entered, which only
    -- forged settings reach.
    if citus_is_coordinator() and citus_pid_for_gpid(gpid) = pg_backend_pid() then
      if currval('tenant_context.session_tenant') = hashtextextended(tenant, (date_part('epoch', now()) * 1000000)::bigint) then
        return tenant;
      end if;
      return '';
    end if;
    if signature is null or challenge is null then
      return '';
    end if;
    -- A node's connection: the signature, for this transaction, and the witness enter() left here.
    select * into tx from get_current_transaction_id();
    -- (This connection's own global pid is not compared: SQL of the app role pushed down to a cached
    -- connection could change it for the session, and so empty every later request that used it.)
    if split_part(challenge, ':', 4) is distinct from tx.initiator_node_identifier || '.' || tx.transaction_number
       or not exists (select 1 from tenant_context.node_keys k where k.key_id = signed_with
         and encode(sha256(k.outer_pad || sha256(k.inner_pad || convert_to(tenant || ':' || challenge, 'UTF8'))), 'hex') = substr(signature, length(signed_with) + 2))
       or not exists (select 1 from get_all_active_transactions() w
         join pg_locks l on l.pid = w.process_id and l.locktype = 'advisory' and l.granted
           and l.classid = ${sql.lit(WITNESS_LOCK)}::oid and l.objid = hashtext(tenant)::oid and l.objsubid = 2
         where w.global_pid::text = split_part(challenge, ':', 3) and w.transaction_number = tx.transaction_number and w.process_id <> pg_backend_pid()
           and (select a.usesysid from pg_stat_get_activity(w.process_id) a) = (select r.oid from pg_roles r where r.rolname = current_user)) then
      return '';
    end if;
    return tenant;
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
