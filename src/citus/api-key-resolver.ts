import { sql, type Kysely } from 'kysely'
import { forget, readRecorded, record } from '../online/recorded-settings.ts'
import { step } from './steps.ts'

/** The API key resolver distribute replaced, as `{ def }`: what undistribute puts back. */
export const REPLACED_RESOLVER = 'citus_replaced_resolver'
const RESOLVER = 'tenant_context.resolve_api_key(text, text)'

/**
 * 0012's resolver joins api_keys with tenants in one query. Once `tenants` is a reference table and
 * until api_keys is distributed, Citus refuses that join on a cluster whose coordinator is not in
 * the metadata ("direct joins between distributed and local tables are not supported"): every
 * API-key login of every tenant failed for that while (an outside review: 16 of 1,097 in a clean
 * run), and for good after a run that stopped in it. This one asks the two tables apart, which
 * Citus runs in any state of either, and answers the same: the key of the named tenant, not
 * revoked or expired, and the tenant active. Both queries run whatever the first finds, so the
 * time taken says nothing more than the answer (which tenant exists, or is active).
 */
const joinFree = (defaultTenant: string) => sql`
  create or replace function tenant_context.resolve_api_key(tenant text, presented_key_hash text)
  returns table (tenant_id text, user_id text)
  language plpgsql volatile security definer
  set search_path = pg_catalog, pg_temp
  as $$
  declare
    was text := current_setting('skills_db.all_tenants', true);
    wanted text := coalesce(tenant, ${sql.lit(defaultTenant)});
    found_tenant text;
    found_user text;
    active boolean;
  begin
    perform set_config('skills_db.all_tenants', 'on', true);
    -- (tenant_id, key_hash) is unique: one row at most.
    select k.tenant_id, k.user_id into found_tenant, found_user from public.api_keys k
    where k.tenant_id = wanted and k.key_hash = presented_key_hash
      and k.revoked_at is null
      and (k.expires_at is null or k.expires_at > now());
    select t.is_active into active from public.tenants t where t.id = wanted;
    perform set_config('skills_db.all_tenants', coalesce(was, ''), true);
    if found_tenant is not null and coalesce(active, false) then
      tenant_id := found_tenant;
      user_id := found_user;
      return next;
    end if;
  end $$`

/**
 * Before `tenants` becomes a reference table: the resolver that asks api_keys and tenants apart,
 * the one it replaces recorded (once, so a rerun keeps 0012's) for undistribute. Idempotent.
 */
export async function resolverWithoutJoin(conn: Kysely<any>): Promise<void> {
  const recorded = await readRecorded(conn, REPLACED_RESOLVER)
  const { rows } = await sql<{ def: string | null }>`select pg_catalog.pg_get_functiondef(pg_catalog.to_regprocedure(${RESOLVER})) as def`.execute(conn)
  const def = recorded ? (JSON.parse(recorded) as { def: string }).def : rows[0]?.def
  if (!def) return
  const defaultTenant = /coalesce\(tenant, '((?:[^']|'')*)'\)/.exec(def)?.[1]?.replace(/''/g, "'")
  if (defaultTenant === undefined) {
    throw new Error(`${RESOLVER} is not the one migration 0012 made (no default tenant in it): nothing was changed; restore it, or migrate to latest`)
  }
  if (!recorded) await record(conn, REPLACED_RESOLVER, JSON.stringify({ def }), { replace: true })
  await step('the API key resolver asks api_keys and tenants apart (Citus refuses their join while one is distributed and the other not)', () =>
    joinFree(defaultTenant).execute(conn))
}

/** undistribute: 0012's resolver back. */
export async function resolverBack(conn: Kysely<any>): Promise<void> {
  const recorded = await readRecorded(conn, REPLACED_RESOLVER)
  if (!recorded) return
  await step('the API key resolver of a single node back', () => sql.raw((JSON.parse(recorded) as { def: string }).def).execute(conn))
  await forget(conn, REPLACED_RESOLVER)
}
