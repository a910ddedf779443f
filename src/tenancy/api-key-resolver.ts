import { sql } from 'kysely'
import type { Step } from '../online/step.ts'
import { appRoleName } from './app-role.ts'

/**
 * The one path from a presented API key to its tenant, for a request that has no tenant yet.
 * SECURITY DEFINER (runs as the migration owner, past row security) with a pinned search_path;
 * answers only for an exact, unrevoked, unexpired hash, and only with tenant_id and user_id.
 */
export const apiKeyResolver: Step = {
  name: 'function resolve_api_key',
  async up(db) {
    const role = await appRoleName(db)
    await sql`
      create or replace function public.resolve_api_key(presented_key_hash text)
      returns table (tenant_id text, user_id text)
      language sql stable security definer
      set search_path = pg_catalog, pg_temp
      as $$
        select k.tenant_id, k.user_id from public.api_keys k
        where k.key_hash = presented_key_hash
          and k.revoked_at is null
          and (k.expires_at is null or k.expires_at > now())
      $$`.execute(db)
    await sql`revoke all on function public.resolve_api_key(text) from public`.execute(db)
    await sql`grant execute on function public.resolve_api_key(text) to ${sql.id(role)}`.execute(db)
  },
  async down(db) {
    await sql`drop function if exists public.resolve_api_key(text)`.execute(db)
  },
}
