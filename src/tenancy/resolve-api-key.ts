import { sql, type Kysely } from 'kysely'
import type { DB } from '../db-types.ts'

/** Where a presented key is looked up: its tenant (the one it names), and the hash of the key as the app stores it. */
export interface PresentedApiKey {
  /** The tenant the key names; absent for the keys the single-tenant app issued, which are the default tenant's. */
  tenantId?: string
  /** The SHA-256 of the whole presented key, in hex: what the app stored as `api_keys.key_hash`. */
  keyHash: string
}

/**
 * Finds the user of a presented API key (by its hash) in one tenant, before any tenant is entered:
 * the tenant the key names, else the default tenant (the single-tenant app's keys). Returns
 * undefined for an unknown, revoked or expired key, or a key of an inactive tenant.
 *
 * Keys are resolved within their tenant, never across tenants: another tenant that stores the same
 * hash changes nothing, and on Citus the lookup goes to that tenant's shard. So an app issues keys
 * that name their tenant, `sk_<tenant id, base64url>.<secret>` ({@link formatApiKey}, {@link apiKeyTenant}),
 * and stores the SHA-256 (hex) of the whole key as `api_keys.key_hash`.
 *
 * @example
 * import { createHash } from 'node:crypto'
 * const caller = await resolveApiKey(db, { tenantId: apiKeyTenant(apiKey), keyHash: createHash('sha256').update(apiKey).digest('hex') })
 * if (!caller) throw new Error('401: the API key is unknown, revoked or expired')
 * await withTenant(db, caller.tenantId, (trx) => trx.selectFrom('users').selectAll().where('id', '=', caller.userId).executeTakeFirst())
 */
export async function resolveApiKey(db: Kysely<DB>, key: PresentedApiKey | string): Promise<{
  /** The key's tenant: the one to enter with withTenant. */
  tenantId: string
  /** The user the key was issued to (api_keys.user_id). */
  userId: string
} | undefined> {
  const { tenantId = null, keyHash } = typeof key === 'string' ? { keyHash: key } : key
  const { rows } = await sql<{ tenant_id: string; user_id: string }>`
    select tenant_id, user_id from tenant_context.resolve_api_key(${tenantId}::text, ${keyHash}::text)`.execute(db)
  return rows[0] ? { tenantId: rows[0].tenant_id, userId: rows[0].user_id } : undefined
}

const KEY_PATTERN = /^sk_([A-Za-z0-9_-]+)\.[A-Za-z0-9_-]+$/

/**
 * A key that names its tenant: `sk_<tenant id, base64url>.<secret>`; the secret is the caller's (e.g.
 * 32 random bytes, base64url). Throws when the secret is not base64url.
 *
 * @example
 * import { createHash, randomBytes } from 'node:crypto'
 * const key = formatApiKey(tenantId, randomBytes(32).toString('base64url'))   // shown to the user once
 * const keyHash = createHash('sha256').update(key).digest('hex')              // stored as api_keys.key_hash
 */
export function formatApiKey(tenantId: string, secret: string): string {
  if (!/^[A-Za-z0-9_-]+$/.test(secret)) throw new Error('an API key secret must be base64url (letters, digits, _ and -)')
  return `sk_${Buffer.from(tenantId, 'utf8').toString('base64url')}.${secret}`
}

/**
 * The tenant a presented key names (see {@link formatApiKey}), or undefined for a key that names none (the single-tenant app's).
 *
 * @example
 * apiKeyTenant(formatApiKey('acme', 'c2VjcmV0')) // 'acme'
 */
export function apiKeyTenant(presented: string): string | undefined {
  const match = KEY_PATTERN.exec(presented)
  return match ? Buffer.from(match[1]!, 'base64url').toString('utf8') : undefined
}
