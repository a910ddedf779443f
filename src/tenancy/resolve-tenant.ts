import { sql, type Kysely } from 'kysely'
import type { DB } from '../db-types.ts'
import { UNSTORABLE } from './create-tenant.ts'
import { tenantRefusal, TenantRequestError } from './tenant-errors.ts'

/** What a request's URL names: the tenant's slug (`app.example.com/acme`) or its own domain (`acme.example.com`). */
export type TenantLookup =
  | {
    /** The tenant's slug, as {@link NewTenant.slug}. */
    slug: string
    /** Not with `slug`: a lookup names one or the other. */
    domain?: never
  }
  | {
    /** A host name; compared in lowercase. */
    domain: string
    /** Not with `domain`: a lookup names one or the other. */
    slug?: never
  }

/**
 * The tenant a slug or domain names, and whether it is active; undefined when none has it. Callable
 * by the app role before any tenant is entered: one lookup of a unique index, through a function of
 * the owner's (0020), so the app role still reads no other tenant's row. It tells whether a slug or
 * domain the caller names exists, as any public URL of the app would; it lists nothing.
 *
 * @example
 * const tenant = await resolveTenant(db, { domain: new URL('https://acme.example.com/skills').hostname })
 * if (!tenant?.active) throw new Error('404: no such tenant, or it is suspended')
 * const skills = await withTenant(db, tenant.tenantId, (trx) => trx.selectFrom('skills').select(['slug', 'name']).execute())
 */
export async function resolveTenant(db: Kysely<DB>, lookup: TenantLookup): Promise<{
  /** The tenant's id: the one to enter with withTenant. */
  tenantId: string
  /** False while the tenant is suspended ({@link suspendTenant}): withTenant refuses it then. */
  active: boolean
} | undefined> {
  const slug = typeof lookup?.slug === 'string' ? lookup.slug : null
  const domain = typeof lookup?.domain === 'string' ? lookup.domain.toLowerCase() : null
  if ((slug === null) === (domain === null)) throw new TenantRequestError('resolveTenant takes { slug } or { domain }, one of them')
  // No tenant's slug or domain holds what text cannot: nothing, as for any other unknown one.
  if (UNSTORABLE.test(slug ?? domain ?? '')) return undefined
  const { rows } = await sql<{ tenant_id: string; active: boolean }>`
    select tenant_id, active from tenant_context.resolve_tenant(${slug}::text, ${domain}::text)`.execute(db).catch((error: unknown) => { throw tenantRefusal(error) })
  return rows[0] ? { tenantId: rows[0].tenant_id, active: rows[0].active } : undefined
}
