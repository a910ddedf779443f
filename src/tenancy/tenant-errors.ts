import { TenantError } from './with-tenant.ts'

/** A tenant request the caller can correct: a bad slug, domain, plan, id or email, with what is wrong. */
export class TenantRequestError extends TenantError {
  override name = 'TenantRequestError'
}

/** createTenant's one answer about other tenants: the slug or the domain is taken (which one, it does not say). */
export class TenantTakenError extends TenantError {
  override name = 'TenantTakenError'
}

/**
 * The error a lifecycle call throws for what the database answered: the taken slug as
 * {@link TenantTakenError}, the database's refusals (no such tenant, a bad signature, not open to
 * more tenants yet, unconfined sessions connected) as {@link TenantError} with its message; anything
 * else (a broken connection) as it came.
 */
export function tenantRefusal(error: unknown): unknown {
  const e = error as { code?: string; message?: string; hint?: string }
  if (error instanceof TenantError) return error
  if (e.code === '23505' && e.hint === 'skills-db: tenant taken') return new TenantTakenError('the slug or domain is taken', { cause: error })
  if (['42501', 'P0002', '55000', '55006', '22023'].includes(e.code ?? '')) {
    return new TenantError(`${e.message}${e.hint && e.code !== '22023' ? ` (${e.hint})` : ''}`, { cause: error })
  }
  return error
}
