import { createHash, randomBytes } from 'node:crypto'
import type { IncomingMessage } from 'node:http'
import type { Kysely, Transaction } from 'kysely'
import { apiKeyTenant, formatApiKey, resolveApiKey, resolveTenant, type DB } from '../../src/index.ts'
import { HttpError } from './http-json.ts'

/** Who is calling, in which tenant: what every /t/:slug/… route works with. */
export interface Caller {
  tenantId: string
  userId: string
}

const sha256 = (text: string) => createHash('sha256').update(text).digest('hex')

/**
 * A new API key for `userId`, inside the tenant's transaction: the key names its tenant
 * (`sk_<tenant>.<secret>`, formatApiKey), the database keeps only its SHA-256. The key itself is
 * returned to be shown once.
 */
export async function issueApiKey(trx: Transaction<DB>, tenantId: string, userId: string, name: string): Promise<string> {
  const key = formatApiKey(tenantId, randomBytes(32).toString('base64url'))
  await trx.insertInto('api_keys').values({ user_id: userId, name, key_hash: sha256(key), key_prefix: key.slice(0, 12) }).execute()
  return key
}

/**
 * The tenant of the URL's slug and the user of the request's API key, or the HTTP error that says
 * which is wrong. A key is looked up in the URL's tenant only: another tenant's key is refused
 * without looking it up, so the answer says nothing about whether it is valid there.
 */
export async function authenticate(db: Kysely<DB>, req: IncomingMessage, slug: string): Promise<Caller> {
  const tenant = await resolveTenant(db, { slug })
  if (!tenant?.active) throw new HttpError(404, `no tenant at /t/${slug}`)
  const presented = /^Bearer (\S+)$/i.exec(req.headers.authorization ?? '')?.[1]
  if (!presented) throw new HttpError(401, 'send the API key that sign-up returned: Authorization: Bearer sk_…')
  const keyTenant = apiKeyTenant(presented)
  if (keyTenant === undefined) throw new HttpError(401, 'that is not an API key of this app (they look like sk_….…)')
  if (keyTenant !== tenant.tenantId) throw new HttpError(403, `this API key is not for /t/${slug}`)
  const caller = await resolveApiKey(db, { tenantId: tenant.tenantId, keyHash: sha256(presented) })
  if (!caller) throw new HttpError(401, 'unknown, revoked or expired API key')
  return caller
}
