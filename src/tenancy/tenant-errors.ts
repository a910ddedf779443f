import { TenantError } from './with-tenant.ts'

/** A tenant request the caller can correct: a bad slug, domain, plan, id or email, with what is wrong. */
export class TenantRequestError extends TenantError {
  /** Always `'TenantRequestError'`, so a log line or a check of `error.name` tells it apart. */
  override name = 'TenantRequestError'
}

/** createTenant's one answer about other tenants: the slug or the domain is taken (which one, it does not say). */
export class TenantTakenError extends TenantError {
  /** Always `'TenantTakenError'`, so a log line or a check of `error.name` tells it apart. */
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
  // Before the open phase the lifecycle's functions do not exist yet.
  if (e.code === '42883' && /tenant_context\.(create_tenant|resolve_tenant|set_tenant_active)/.test(e.message ?? '')) {
    return new TenantError('this database has no tenant lifecycle yet (migration 0020_tenant_lifecycle): run skills-db open (npm run migrate:open in the checkout of skills-db), which applies it', { cause: error })
  }
  // 0005's guard, whose own advice (a setting in this transaction) the app cannot follow.
  if (e.code === '55006' && /^refusing to create tenant/.test(e.message ?? '')) {
    const who = /are connected: (.*)$/.exec(e.message ?? '')?.[1] ?? 'see the server log'
    return new TenantError(`refusing to create a tenant while superuser or BYPASSRLS sessions are connected to the database (${who}): they could be the single-tenant app, which row security cannot confine. Close them (a psql session as postgres counts; managed hosting has none), or, when none is the old app, create it with skills-db tenant create --force`, { cause: error })
  }
  if (['42501', 'P0002', '55000', '22023'].includes(e.code ?? '')) {
    return new TenantError(`${e.message}${e.hint && e.code !== '22023' ? ` (${e.hint})` : ''}`, { cause: error })
  }
  return error
}
