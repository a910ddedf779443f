import { sql, type Kysely } from 'kysely'
import { DataLossRefused, guardDown } from '../online/data-loss-guard.ts'
import { index } from '../online/concurrent-index.ts'
import { foreignKey, type ForeignKeySpec } from '../online/foreign-key.ts'
import { notNull } from '../online/not-null.ts'
import { rowSecurityPolicy } from '../online/row-security.ts'
import { applySteps, reverse, revertSteps, type Step } from '../online/step.ts'
import { swapPrimaryKey, uniqueKey } from '../online/unique-key.ts'
import { apiKeyResolver } from '../tenancy/api-key-resolver.ts'
import { appRole, grant } from '../tenancy/app-role.ts'
import { tenantIsolation } from '../tenancy/tenant-setting.ts'
import { TENANT_TABLES } from '../tenancy/tenant-tables.ts'

/** The legacy references between data tables; each becomes a composite key that includes tenant_id. */
const REFERENCES: { table: string; column: string; parent: 'users' | 'skills'; onDelete: 'cascade' | 'set null'; legacyName: string }[] = [
  { table: 'skills', column: 'author_id', parent: 'users', onDelete: 'set null', legacyName: 'skills_author_id_users_id_fk' },
  { table: 'ratings', column: 'skill_id', parent: 'skills', onDelete: 'cascade', legacyName: 'ratings_skill_id_skills_id_fk' },
  { table: 'ratings', column: 'user_id', parent: 'users', onDelete: 'cascade', legacyName: 'ratings_user_id_users_id_fk' },
  { table: 'usage_events', column: 'skill_id', parent: 'skills', onDelete: 'set null', legacyName: 'usage_events_skill_id_skills_id_fk' },
  { table: 'usage_events', column: 'user_id', parent: 'users', onDelete: 'set null', legacyName: 'usage_events_user_id_users_id_fk' },
  { table: 'skill_versions', column: 'skill_id', parent: 'skills', onDelete: 'cascade', legacyName: 'skill_versions_skill_id_skills_id_fk' },
  { table: 'skill_versions', column: 'created_by', parent: 'users', onDelete: 'set null', legacyName: 'skill_versions_created_by_users_id_fk' },
  { table: 'skill_embeddings', column: 'skill_id', parent: 'skills', onDelete: 'cascade', legacyName: 'skill_embeddings_skill_id_skills_id_fk' },
  { table: 'skill_reviews', column: 'skill_id', parent: 'skills', onDelete: 'cascade', legacyName: 'skill_reviews_skill_id_skills_id_fk' },
  { table: 'skill_reviews', column: 'requested_by', parent: 'users', onDelete: 'set null', legacyName: 'skill_reviews_requested_by_users_id_fk' },
  { table: 'api_keys', column: 'user_id', parent: 'users', onDelete: 'cascade', legacyName: 'api_keys_user_id_users_id_fk' },
]

/** A unique key that becomes per-tenant: the new one is in place before the global one goes. */
const perTenant = (table: string, column: string, globalName: string, tenantName: string): Step[] => [
  uniqueKey({ table, name: tenantName, columns: ['tenant_id', column] }),
  reverse(uniqueKey({ table, name: globalName, columns: [column] })),
]

const steps: Step[] = [
  ...TENANT_TABLES.map((table) => notNull(table, 'tenant_id')),
  ...TENANT_TABLES.map((table) =>
    foreignKey({ table, name: `${table}_tenant_id_fk`, columns: ['tenant_id'], references: { table: 'tenants', columns: ['id'] } })),

  // Parents expose (tenant_id, id) so children can reference a row *of their own tenant*.
  uniqueKey({ table: 'users', name: 'users_tenant_id_id_unique', columns: ['tenant_id', 'id'] }),
  uniqueKey({ table: 'skills', name: 'skills_tenant_id_id_unique', columns: ['tenant_id', 'id'] }),
  ...REFERENCES.flatMap((ref): Step[] => {
    const legacy: ForeignKeySpec = {
      table: ref.table, name: ref.legacyName, columns: [ref.column], references: { table: ref.parent, columns: ['id'] }, onDelete: ref.onDelete,
    }
    return [
      foreignKey({
        table: ref.table,
        name: `${ref.table}_${ref.column}_tenant_fk`,
        columns: ['tenant_id', ref.column],
        references: { table: ref.parent, columns: ['tenant_id', 'id'] },
        // SET NULL must clear the reference only: tenant_id stays.
        onDelete: ref.onDelete === 'cascade' ? 'cascade' : { setNull: [ref.column] },
      }),
      reverse(foreignKey(legacy)),
    ]
  }),

  // The single-tenant app looks skills up by slug alone: keep that fast once slug is per tenant.
  index({ table: 'skills', name: 'skills_slug_idx', columns: ['slug'] }),
  ...perTenant('skills', 'slug', 'skills_slug_unique', 'skills_tenant_slug_unique'),
  ...perTenant('skill_embeddings', 'skill_id', 'skill_embeddings_skill_id_unique', 'skill_embeddings_tenant_skill_unique'),
  ...perTenant('skill_reviews', 'skill_id', 'skill_reviews_skill_id_unique', 'skill_reviews_tenant_skill_unique'),
  // A global unique email would tell tenant B, by a duplicate-key error, that an address exists in A.
  index({ table: 'users', name: 'users_email_idx', columns: ['email'] }),
  ...perTenant('users', 'email', 'users_email_unique', 'users_tenant_email_unique'),
  // Each tenant gets its own 'default' settings row.
  swapPrimaryKey({ table: 'site_settings', name: 'site_settings_pkey', from: ['id'], to: ['tenant_id', 'id'] }),

  // Tenant-scoped reads: the policy's tenant_id condition and the query's own filter share one index.
  index({ table: 'usage_events', name: 'usage_events_tenant_created_at_idx', columns: ['tenant_id', 'created_at'] }),
  index({ table: 'skills', name: 'skills_tenant_total_uses_idx', columns: ['tenant_id', 'total_uses'] }),
  index({ table: 'ratings', name: 'ratings_tenant_id_idx', columns: ['tenant_id'] }),
  index({ table: 'skill_versions', name: 'skill_versions_tenant_id_idx', columns: ['tenant_id'] }),
  index({ table: 'api_keys', name: 'api_keys_tenant_id_idx', columns: ['tenant_id'] }),

  ...TENANT_TABLES.map((table) => rowSecurityPolicy(table, 'tenant_isolation', tenantIsolation)),
  appRole,
  grant('tenants', ['select']),
  ...TENANT_TABLES.map((table) => grant(table, ['select', 'insert', 'update', 'delete'])),
  apiKeyResolver,
  guardDown('global keys can be restored', async (db) => {
    // Undoing per-tenant keys rebuilds the global ones; tenants sharing a value would make that fail halfway.
    for (const [table, column] of [['skills', 'slug'], ['users', 'email'], ['skill_embeddings', 'skill_id'], ['skill_reviews', 'skill_id'], ['site_settings', 'id']] as const) {
      const { rows } = await sql<{ v: string }>`select ${sql.ref(column)}::text as v from ${sql.table(table)} group by 1 having count(*) > 1 limit 1`.execute(db)
      if (rows[0]) {
        throw new DataLossRefused(`cannot roll back 0005: ${table}.${column} "${rows[0].v}" is used by several tenants, and ${table}.${column} must be globally unique again; remove the duplicates first`)
      }
    }
  }),
]

export const up = (db: Kysely<any>) => applySteps(db, steps)
export const down = (db: Kysely<any>) => revertSteps(db, steps)
