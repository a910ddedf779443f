import { createHmac } from 'node:crypto'

/**
 * A key the app signs its tenant context with: `<id>:<secret>`, e.g. `k2026:` followed by the
 * output of `openssl rand -base64 32`. The id names the key in a signature, so the database knows
 * which of the (at most two, during a rotation) keys it holds to check it against.
 */
export interface TenantKey {
  id: string
  secret: string
}

/**
 * A tenant or audit key that cannot be used: not `<id>:<secret>`, a secret shorter than 32
 * characters, or a list of keys that is empty, longer than two, or names one key twice. The
 * message says which setting it came from.
 */
export class TenantKeyError extends Error {
  /** Always `'TenantKeyError'`, so a log line or a check of `error.name` tells it apart. */
  override name = 'TenantKeyError'
}

const MIN_SECRET_LENGTH = 32

/** Parses `<id>:<secret>`; `what` names where it came from, for the error. */
export function parseTenantKey(text: string, what: string): TenantKey {
  const colon = text.indexOf(':')
  const id = colon < 0 ? '' : text.slice(0, colon)
  const secret = colon < 0 ? '' : text.slice(colon + 1)
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(id)) {
    throw new TenantKeyError(`${what} must look like <id>:<secret> (an id of letters, digits, _ . -, then a colon and the secret)`)
  }
  if (secret.length < MIN_SECRET_LENGTH) {
    throw new TenantKeyError(`${what}: the secret of key "${id}" has ${secret.length} characters; use at least ${MIN_SECRET_LENGTH} (e.g. openssl rand -base64 32)`)
  }
  return { id, secret }
}

/** A comma-separated list of keys (the migrator's SKILLS_DB_TENANT_KEYS): one, or two while rotating. */
export function parseTenantKeys(text: string, what: string): TenantKey[] {
  const keys = text.split(',').map((k) => k.trim()).filter(Boolean).map((k) => parseTenantKey(k, what))
  if (keys.length === 0) throw new TenantKeyError(`${what} lists no key`)
  if (keys.length > 2) throw new TenantKeyError(`${what} lists ${keys.length} keys; the database holds at most two (the new and the old one, while rotating)`)
  if (keys.length === 2 && keys[0]!.id === keys[1]!.id) throw new TenantKeyError(`${what} lists key "${keys[0]!.id}" twice`)
  return keys
}

/** The signature `tenant_context.enter` accepts: `<key id>:<HMAC-SHA256 of "<tenant>:<challenge>", hex>`. */
export function signTenantContext(key: TenantKey, tenantId: string, challenge: string): string {
  return `${key.id}:${createHmac('sha256', key.secret).update(`${tenantId}:${challenge}`, 'utf8').digest('hex')}`
}
