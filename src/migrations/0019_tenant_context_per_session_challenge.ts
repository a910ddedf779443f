import { sql, type Kysely } from 'kysely'
import { databaseFunction } from '../online/database-function.ts'
import { applySteps, revertSteps, type Step } from '../online/step.ts'

// Frozen: the function bodies below are this migration's own, as of when it was written (see
// README.md in this folder).

/**
 * A tenant context the app can enter without asking first (issue 18). 0008's challenge is the
 * transaction's start, which the app learns only by asking inside the transaction: a round trip
 * of its own before every `enter()`. Here the challenge is `<backend pid>:<mark>`, where the mark
 * is this session's value of 0008's sequence, which only `setval` changes and the app role may not
 * call: `session_challenge()` sets it to a strong random value (once per connection), and each
 * `enter()` to 0008's hash of the tenant and the transaction's start, and answers the challenge
 * that follows. So the app knows the next challenge, and sends BEGIN and `enter()` together.
 *
 * What keeps a signature from serving twice is the mark: a signature is good in the session whose
 * pid it names, while the mark is the one it names, and the `enter()` that accepts it moves the
 * mark to a hash of a transaction start no later transaction has. `session_challenge()` moves it
 * only to a new random value. `current_tenant()` and every policy are unchanged (the mark is the
 * one they check), and so is the old `enter(tenant, signature)`.
 */

/**
 * This session's challenge, after setting its mark to a new random value (64 bits of
 * gen_random_uuid(), which reads the server's strong random source: random() can be seeded by
 * the caller). NULL on Citus, recorded by distribute before it replaces the tenant context: there
 * every node checks the transaction's own challenge, so the app asks per transaction.
 */
const sessionChallenge = databaseFunction({
  signature: 'tenant_context.session_challenge()',
  executeBy: 'app role',
  definition: sql`
    create or replace function tenant_context.session_challenge() returns text
    language plpgsql volatile security definer
    set search_path = pg_catalog, pg_temp
    as $$
    declare
      u text := replace(gen_random_uuid()::text, '-', '');
    begin
      if exists (select 1 from skills_db.settings s where s.key = 'citus_replaced_functions') then
        return null;
      end if;
      -- 16 of the uuid's hex digits, leaving out its version digit (13th) and variant digit (17th).
      return pg_backend_pid() || ':' || setval('tenant_context.session_tenant',
        ('x' || substr(u, 1, 12) || substr(u, 14, 3) || substr(u, 18, 1))::bit(64)::bigint);
    end $$`,
})

/**
 * Enters `tenant` for this transaction, as 0008's enter() does, given the app's HMAC of
 * `<tenant>:<challenge>`, and answers the session's next challenge. The challenge must be the
 * session's current one: any other (another session's, one already used, one from before
 * session_challenge() was called again) fails with SQLSTATE TC001 before the signature is looked
 * at, and the app asks for the session's challenge again. One read of the keys and the tenant,
 * where 0008's makes three.
 */
const enter = databaseFunction({
  signature: 'tenant_context.enter(text, text, text)',
  executeBy: 'app role',
  definition: sql`
    create or replace function tenant_context.enter(tenant text, challenge text, signature text) returns text
    language plpgsql volatile security definer
    set search_path = pg_catalog, pg_temp
    as $$
    declare
      mark bigint := currval('tenant_context.session_tenant');
      signed_with text := split_part(signature, ':', 1);
      entry record;
    begin
      if challenge is distinct from (pg_backend_pid() || ':' || mark) then
        raise exception 'the tenant context challenge is not this session''s current one'
          using errcode = 'TC001', hint = 'ask tenant_context.session_challenge() for it again';
      end if;
      select k.inner_pad, k.outer_pad, t.is_active as active into entry
        from skills_db.tenant_context_keys k left join public.tenants t on t.id = tenant
        where k.key_id = signed_with;
      if entry.inner_pad is null then
        if not exists (select 1 from skills_db.tenant_context_keys) then
          raise exception 'the database holds no tenant context key'
            using errcode = 'insufficient_privilege',
              hint = 'run the migrator with SKILLS_DB_TENANT_KEYS (or tenantKeys) listing the key the app signs with';
        end if;
        raise exception 'the tenant context is signed with key "%", which the database does not hold', left(signed_with, 64)
          using errcode = 'insufficient_privilege',
            hint = 'add it to the migrator''s SKILLS_DB_TENANT_KEYS (or tenantKeys), or give the app a key listed there';
      end if;
      if encode(sha256(entry.outer_pad || sha256(entry.inner_pad || convert_to(tenant || ':' || challenge, 'UTF8'))), 'hex')
         is distinct from substr(signature, length(signed_with) + 2) then
        raise exception 'the tenant context signature is not valid for this session''s challenge'
          using errcode = 'insufficient_privilege',
            hint = 'the app''s key and the database''s copy of it differ';
      end if;
      if entry.active is not true then
        raise exception 'unknown or inactive tenant "%"', left(tenant, 64) using errcode = 'insufficient_privilege';
      end if;
      mark := hashtextextended(tenant, (date_part('epoch', now()) * 1000000)::bigint);
      perform setval('tenant_context.session_tenant', mark);
      perform set_config('app.current_tenant_id', tenant, true);
      perform set_config('tenant_context.entered', 'on', true);
      return pg_backend_pid() || ':' || mark;
    end $$`,
})

/**
 * withTenant's clean-up (see with-tenant.ts) as one statement: the six commands sent as one
 * simple query cost the server about 110 µs a request, each parsed and answered on its own;
 * through EXECUTE in one function, about 40 µs. No SECURITY DEFINER and no SET clause: it acts
 * on the caller's own session, and a SET clause would put the caller's search_path back on exit,
 * undoing the RESET ALL. Nothing in it is looked up by name but the qualified unlock function.
 */
const cleanUp = databaseFunction({
  signature: 'tenant_context.clean_up()',
  executeBy: 'app role',
  definition: sql`
    create or replace function tenant_context.clean_up() returns void
    language plpgsql volatile
    as $$
    begin
      execute 'reset all';
      execute 'close all';
      execute 'deallocate all';
      execute 'discard temp';
      execute 'unlisten *';
      perform pg_catalog.pg_advisory_unlock_all();
    end $$`,
})

/**
 * The end of a request, before its COMMIT: refuses (SQLSTATE TC002) when no tenant is entered in
 * this transaction any more, which is what SQL of fn's that ended withTenant's transaction and
 * began another leaves (`rollback; begin`: an outside review had withTenant report success for a
 * request of which nothing was committed). The mark binds the tenant to the transaction's start,
 * so no SQL can make a later transaction look entered. Then, when asked, the clean-up.
 */
const endRequest = databaseFunction({
  signature: 'tenant_context.end_request(boolean)',
  executeBy: 'app role',
  definition: sql`
    create or replace function tenant_context.end_request(clean boolean) returns void
    language plpgsql volatile
    as $$
    declare
      entered pg_catalog.text;
    begin
      -- Through EXECUTE: current_tenant() is IMMUTABLE for the planner, so a cached plan of this
      -- function's would keep the value of its first call (0011 reads it the same way). SQL that
      -- made the session forget its mark (DISCARD SEQUENCES) gets currval's error there: no tenant.
      begin
        execute 'select tenant_context.current_tenant()' into entered;
      exception when object_not_in_prerequisite_state then
        entered := null;
      end;
      if coalesce(entered, '') operator(pg_catalog.=) '' then
        raise exception 'the transaction withTenant entered was ended by SQL in fn' using errcode = 'TC002';
      end if;
      if clean then
        perform tenant_context.clean_up();
      end if;
    end $$`,
})

const steps: Step[] = [sessionChallenge, enter, cleanUp, endRequest]

export const up = (db: Kysely<any>) => applySteps(db, steps)
export const down = (db: Kysely<any>) => revertSteps(db, steps)
