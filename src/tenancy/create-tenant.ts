import { createHash, randomBytes, randomUUID } from 'node:crypto'
import { sql, type Kysely } from 'kysely'
import type { DB } from '../db-types.ts'
import { inSignedTransaction, lifecycleRequest } from './lifecycle-request.ts'
import { tenantRefusal, TenantRequestError } from './tenant-errors.ts'
import { keyFor } from './with-tenant.ts'

/** The tenant {@link createTenant} creates: checked here, each field's rule below, before anything is sent. */
export interface NewTenant {
  /** Shown to people: 1 to 200 characters. */
  name: string
  /** The tenant in a URL (`app.example.com/acme`): 1 to 63 lowercase letters, digits and hyphens, no hyphen first or last. */
  slug: string
  /** A host name of its own (`acme.example.com`), stored in lowercase; unique. */
  domain?: string
  /** Default 'freemium'. Lowercase letters, digits, _ and -. */
  plan?: string
  /** The tenant's id (letters, digits, _ and -, up to 128); default a new UUID. */
  id?: string
  /**
   * What makes a retry the same sign-up: a secret of at least 16 characters that the caller keeps
   * with the sign-up (in its session, say) and passes again, with the same `id`, when it retries
   * after an unknown outcome. Default: a new random one (retries inside this call only).
   */
  requestKey?: string
}

/** The tenant's first user, created with it in the same transaction, with the role `admin`. */
export interface FirstAdmin {
  /** Its email address (users.email): something@something, up to 320 characters. */
  email: string
  /** Its name as shown to people (users.name). */
  name?: string
}

/** What {@link createTenant} answers: the tenant's id, whether this call created it, and the admin's id. */
export interface CreatedTenant {
  /** The tenant's id: `NewTenant.id`, or the UUID made for it. */
  tenantId: string
  /** The first admin's user id (a new UUID), when one was given. */
  adminId?: string
  /** false when an earlier try of this same request had created it. */
  created: boolean
}

const TENANT_ID = /^[A-Za-z0-9_-]{1,128}$/
const SLUG = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/
const DOMAIN = /^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]([a-z0-9-]{0,61}[a-z0-9])?$/
const PLAN = /^[a-z0-9_-]{1,64}$/
const EMAIL = /^[^\s@]+@[^\s@]+$/
/** What PostgreSQL's text cannot hold: a NUL, or half a surrogate pair (an outside review had a NUL answered with the driver's raw encoding error). */
export const UNSTORABLE = /\u0000|\p{Surrogate}/u

/**
 * Creates a tenant, and with it its first admin user, in one transaction: the sign-up of a
 * multi-tenant app, from the app's own connection (the app role). The database accepts it only with
 * the tenant key's signature over the request and this transaction's challenge (0020), so SQL
 * injected as the app role creates nothing.
 *
 * Concurrent sign-ups of one slug make one tenant; the others get {@link TenantTakenError}, the one
 * answer about other tenants this gives ("the slug or domain is taken"). It retries a connection
 * that broke before the answer, as the same request; across processes, pass the same `id` and
 * `requestKey` again, and a request that had committed answers `created: false`.
 *
 * Needs the open phase (`skills-db open`); refused while a superuser or BYPASSRLS session is
 * connected to the database (the single-tenant app's guard, 0005), with the sessions named.
 *
 * @example
 * const { tenantId, adminId } = await createTenant(db, { name: 'Acme', slug: 'acme' }, { email: 'ann@acme.example' })
 * await withTenant(db, tenantId, (trx) => recordAudit(trx, { actorId: adminId ?? null, action: 'tenant.signup' }))
 */
export async function createTenant(db: Kysely<DB>, tenant: NewTenant, firstAdmin?: FirstAdmin): Promise<CreatedTenant> {
  const key = keyFor(db, 'createTenant')
  const id = tenant.id ?? randomUUID()
  const name = tenant.name
  const slug = tenant.slug
  if (tenant.domain !== undefined && typeof tenant.domain !== 'string') throw new TenantRequestError(`domain ${JSON.stringify(tenant.domain)} is not a host name (e.g. acme.example.com)`)
  if (tenant.plan !== undefined && typeof tenant.plan !== 'string') throw new TenantRequestError(`plan ${JSON.stringify(tenant.plan)} is not lowercase letters, digits, _ and -`)
  const domain = tenant.domain === undefined ? null : tenant.domain.toLowerCase()
  const plan = tenant.plan ?? 'freemium'
  const requestKey = tenant.requestKey ?? randomBytes(24).toString('base64url')
  if (typeof name !== 'string' || name.trim() === '' || name.length > 200) throw new TenantRequestError('a tenant\'s name has 1 to 200 characters')
  if (typeof slug !== 'string' || !SLUG.test(slug)) throw new TenantRequestError(`slug ${JSON.stringify(slug)} is not 1 to 63 lowercase letters, digits and hyphens, with no hyphen first or last`)
  if (domain !== null && !DOMAIN.test(domain)) throw new TenantRequestError(`domain ${JSON.stringify(tenant.domain)} is not a host name (e.g. acme.example.com)`)
  if (!PLAN.test(plan)) throw new TenantRequestError(`plan ${JSON.stringify(plan)} is not lowercase letters, digits, _ and -`)
  if (!TENANT_ID.test(id)) throw new TenantRequestError(`tenant id ${JSON.stringify(id)} is not 1 to 128 letters, digits, _ and -`)
  if (typeof requestKey !== 'string' || requestKey.length < 16 || UNSTORABLE.test(requestKey)) throw new TenantRequestError('requestKey has at least 16 characters, none of them a NUL or a lone surrogate (e.g. randomBytes(24).toString(\'base64url\'))')
  if ([name, firstAdmin?.email, firstAdmin?.name].some((v) => typeof v === 'string' && UNSTORABLE.test(v))) {
    throw new TenantRequestError('a tenant\'s name, or its first admin\'s email or name, holds a NUL or a lone surrogate (\\ud800–\\udfff), which text cannot store')
  }
  if (firstAdmin !== undefined && (typeof firstAdmin.email !== 'string' || !EMAIL.test(firstAdmin.email) || firstAdmin.email.length > 320)) {
    throw new TenantRequestError(`the first admin's email ${JSON.stringify(firstAdmin.email)} is not an address`)
  }
  const adminId = firstAdmin ? randomUUID() : null
  const values = [id, name, slug, domain, plan, adminId, firstAdmin?.email ?? null, firstAdmin?.name ?? null,
    createHash('sha256').update(requestKey, 'utf8').digest('hex')]
  const request = lifecycleRequest('create', values)
  for (let attempt = 1; ; attempt++) {
    try {
      const outcome = await inSignedTransaction(db, key, request, async (trx, signature) => {
        const { rows } = await sql<{ outcome: string }>`select tenant_context.create_tenant(
          ${values[0]}::text, ${values[1]}::text, ${values[2]}::text, ${values[3]}::text, ${values[4]}::text,
          ${values[5]}::text, ${values[6]}::text, ${values[7]}::text, ${values[8]}::text, ${signature}::text) as outcome`.execute(trx)
        return rows[0]!.outcome
      })
      if (outcome === 'exists') return { tenantId: id, created: false }
      return { tenantId: id, ...(adminId ? { adminId } : {}), created: true }
    } catch (error) {
      // A broken connection (no SQLSTATE): the commit's outcome is unknown, and the same request again tells.
      if ((error as { code?: string }).code === undefined && attempt < 3 && !(error instanceof TenantRequestError)) continue
      throw tenantRefusal(error)
    }
  }
}

