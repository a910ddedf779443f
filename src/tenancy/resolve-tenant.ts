import { sql, type Kysely } from 'kysely'
import type { DB } from '../db-types.ts'
import { tenantRefusal, TenantRequestError } from './tenant-errors.ts'

/** What a request's URL names: the tenant's slug (`app.example.com/acme`) or its own domain (`acme.example.com`). */
export type TenantLookup = { slug: string; domain?: never } | { domain: string; slug?: never }

/**
 * The tenant a slug or domain names, and whether it is active; undefined when none has it. Callable
 * by the app role before any tenant is entered: one lookup of a unique index, through a function of
 * the owner's (0020), so the app role still reads no other tenant's row. It tells whether a slug or
 * domain the caller names exists, as any public URL of the app would; it lists nothing.
 *
 * @example
 * const tenant = await resolveTenant(db, { domain: new URL(req.url!, `http://${req.headers.host}`).hostname })
 * if (!tenant?.active) return notFound()
 * await withTenant(db, tenant.tenantId, (trx) => …)
 */
export async function resolveTenant(db: Kysely<DB>, lookup: TenantLookup): Promise<{ tenantId: string; active: boolean } | undefined> {
  const slug = typeof lookup?.slug === 'string' ? lookup.slug : null
  const domain = typeof lookup?.domain === 'string' ? lookup.domain.toLowerCase() : null
  if ((slug === null) === (domain === null)) throw new TenantRequestError('resolveTenant takes { slug } or { domain }, one of them')
  const { rows } = await sql<{ tenant_id: string; active: boolean }>`
    select tenant_id, active from tenant_context.resolve_tenant(${slug}::text, ${domain}::text)`.execute(db).catch((error: unknown) => { throw tenantRefusal(error) })
  return rows[0] ? { tenantId: rows[0].tenant_id, active: rows[0].active } : undefined
}
