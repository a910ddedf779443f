import { sql } from 'kysely'

/** The transaction-local setting that names the current tenant (set only by withTenant). */
export const TENANT_SETTING = 'app.current_tenant_id'

/**
 * The row belongs to the current tenant. The current tenant is NULL when the setting is missing
 * or empty — `''` is what current_setting returns after RESET or once a SET LOCAL has ended —
 * and NULL matches no row, so every policy built on this fails closed.
 */
export const tenantIsolation = sql`tenant_id = nullif(current_setting('app.current_tenant_id', true), '')`
