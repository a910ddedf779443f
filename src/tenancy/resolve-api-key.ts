import { sql, type Kysely } from 'kysely'
import type { DB } from '../db-types.ts'

/**
 * Finds the tenant and user of a presented API key (by its hash) before any tenant is known.
 * Returns undefined for an unknown, revoked or expired key.
 */
export async function resolveApiKey(db: Kysely<DB>, keyHash: string): Promise<{ tenantId: string; userId: string } | undefined> {
  const { rows } = await sql<{ tenant_id: string; user_id: string }>`select tenant_id, user_id from resolve_api_key(${keyHash})`.execute(db)
  return rows[0] ? { tenantId: rows[0].tenant_id, userId: rows[0].user_id } : undefined
}
