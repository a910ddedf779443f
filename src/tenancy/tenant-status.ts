import { sql, type Kysely } from 'kysely'
import type { DB } from '../db-types.ts'
import { inSignedTransaction, lifecycleRequest } from './lifecycle-request.ts'
import { UNSTORABLE } from './create-tenant.ts'
import { tenantRefusal, TenantRequestError } from './tenant-errors.ts'
import { keyFor } from './with-tenant.ts'

/** What {@link suspendTenant} or {@link activateTenant} did: `'unchanged'` when the tenant already was as asked. */
export type TenantStatusChange = 'suspended' | 'activated' | 'unchanged'

/**
 * Suspends a tenant: from the next request on, withTenant refuses it and its API keys resolve to
 * nobody (enter() and resolve_api_key read the flag on every call; no restart). Signed with the
 * tenant key, as createTenant is. 'unchanged' when it already was suspended.
 *
 * @example
 * await suspendTenant(db, tenantId)   // e.g. an unpaid invoice
 */
export function suspendTenant(db: Kysely<DB>, tenantId: string): Promise<TenantStatusChange> {
  return setActive(db, tenantId, false)
}

/**
 * Makes a suspended tenant active again; refused for a tenant the operator is deleting.
 *
 * @example
 * if (await activateTenant(db, tenantId) === 'unchanged') console.log('it was not suspended')
 */
export function activateTenant(db: Kysely<DB>, tenantId: string): Promise<TenantStatusChange> {
  return setActive(db, tenantId, true)
}

async function setActive(db: Kysely<DB>, tenantId: string, active: boolean): Promise<TenantStatusChange> {
  if (typeof tenantId !== 'string' || tenantId === '' || tenantId.length > 128) throw new TenantRequestError('a tenant id has 1 to 128 characters')
  if (UNSTORABLE.test(tenantId)) throw new TenantRequestError('a tenant id holds no NUL and no lone surrogate (\\ud800–\\udfff): no tenant has this one')
  const key = keyFor(db, active ? 'activateTenant' : 'suspendTenant')
  const request = lifecycleRequest(active ? 'activated' : 'suspended', [tenantId])
  try {
    return await inSignedTransaction(db, key, request, async (trx, signature) => {
      const { rows } = await sql<{ outcome: TenantStatusChange }>`
        select tenant_context.set_tenant_active(${tenantId}::text, ${active}::boolean, ${signature}::text) as outcome`.execute(trx)
      return rows[0]!.outcome
    })
  } catch (error) {
    throw tenantRefusal(error)
  }
}
