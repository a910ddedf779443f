import { AsyncLocalStorage } from 'node:async_hooks'
import { sql, type Kysely, type Transaction } from 'kysely'
import type { DB } from '../db-types.ts'
import { TENANT_SETTING } from './tenant-setting.ts'

export const MAX_TENANT_ID_LENGTH = 128

export class TenantError extends Error {
  override name = 'TenantError'
}

/** Set while a withTenant callback runs, so a nested call fails at once instead of waiting for a second connection. */
const inside = new AsyncLocalStorage<string>()

/**
 * Runs `fn` in a transaction scoped to one tenant: row-level security shows and accepts only that
 * tenant's rows, and inserts get its tenant_id by default. The tenant is set with
 * `set_config(…, true)` as a bound parameter, so it ends with the transaction. Connect as the
 * application role: superusers, BYPASSRLS roles and the owner are not held by its policies.
 *
 * The connection goes back to the pool clean: whatever `fn` left on the session (a session-wide
 * setting, a temporary table, a WITH HOLD cursor, a prepared statement, a LISTEN, an advisory lock)
 * is discarded after the transaction. Calling withTenant inside `fn` is an error: use `trx`.
 *
 * @example
 * const skills = await withTenant(db, tenantId, (trx) =>
 *   trx.selectFrom('skills').select(['slug', 'name']).orderBy('total_uses', 'desc').limit(10).execute())
 */
export async function withTenant<T>(db: Kysely<DB>, tenantId: string, fn: (trx: Transaction<DB>) => Promise<T>): Promise<T> {
  assertTenantId(tenantId)
  const outer = inside.getStore()
  if (outer !== undefined) {
    throw new TenantError(`withTenant called inside withTenant (tenant "${outer.slice(0, 64)}"): use the transaction you were given`)
  }
  return db.connection().execute(async (conn) => {
    try {
      return await conn.transaction().execute(async (trx) => {
        const { rows } = await sql<{ active: boolean }>`
          select tenant_context.tenant_is_active(${tenantId}::text) as active
          from (select pg_catalog.set_config(${TENANT_SETTING}::text, ${tenantId}::text, true) offset 0) s`.execute(trx)
        if (!rows[0]?.active) throw new TenantError(`unknown or inactive tenant "${tenantId.slice(0, 64)}"`)
        return await inside.run(tenantId, () => fn(trx))
      })
    } finally {
      // One round trip; a failure here means the connection is broken, and the pool drops it.
      await sql.raw(`reset all; close all; deallocate all; discard temp; unlisten *; select pg_catalog.pg_advisory_unlock_all()`).execute(conn).catch(() => {})
    }
  })
}

function assertTenantId(tenantId: unknown): asserts tenantId is string {
  if (typeof tenantId !== 'string' || tenantId.trim() === '') throw new TenantError('tenant id is empty')
  if (tenantId.length > MAX_TENANT_ID_LENGTH) throw new TenantError(`tenant id is longer than ${MAX_TENANT_ID_LENGTH} characters`)
  if (tenantId.includes('\0')) throw new TenantError('tenant id contains a NUL byte')
}
