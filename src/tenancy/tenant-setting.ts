/**
 * The transaction-local setting that names the current tenant (set only by withTenant). The
 * policies of migrations 0005 and 0006 read it by this name: never rename it.
 */
export const TENANT_SETTING = 'app.current_tenant_id'
