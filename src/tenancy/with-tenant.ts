import { sql, type Kysely, type Transaction } from 'kysely'
import type { DB } from '../db-types.ts'
import { TENANT_SETTING } from './tenant-setting.ts'

export const MAX_TENANT_ID_LENGTH = 128

export class TenantError extends Error {
  override name = 'TenantError'
}

/**
 * Runs `fn` in a transaction scoped to one tenant: row-level security shows and accepts only that
 * tenant's rows, and inserts get its tenant_id by default. The tenant is set with
 * `set_config(…, true)` as a bound parameter, so it ends with the transaction and never reaches
 * the next user of the pooled connection. Connect as the application role: superusers, BYPASSRLS
 * roles and (without FORCE) owners are not filtered.
 *
 * @example
 * const skills = await withTenant(db, tenantId, (trx) =>
 *   trx.selectFrom('skills').select(['slug', 'name']).orderBy('total_uses', 'desc').limit(10).execute())
 */
export async function withTenant<T>(db: Kysely<DB>, tenantId: string, fn: (trx: Transaction<DB>) => Promise<T>): Promise<T> {
  assertTenantId(tenantId)
  return db.transaction().execute(async (trx) => {
    const { rows } = await sql<{ known: boolean }>`
      select set_config(${TENANT_SETTING}, ${tenantId}, true) is not null
         and exists (select 1 from tenants where id = ${tenantId} and is_active) as known`.execute(trx)
    if (!rows[0]?.known) throw new TenantError(`unknown or inactive tenant "${tenantId.slice(0, 64)}"`)
    return fn(trx)
  })
}

function assertTenantId(tenantId: unknown): asserts tenantId is string {
  if (typeof tenantId !== 'string' || tenantId.trim() === '') throw new TenantError('tenant id is empty')
  if (tenantId.length > MAX_TENANT_ID_LENGTH) throw new TenantError(`tenant id is longer than ${MAX_TENANT_ID_LENGTH} characters`)
  if (tenantId.includes('\0')) throw new TenantError('tenant id contains a NUL byte')
}
