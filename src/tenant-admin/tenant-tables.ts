/**
 * A tenant's tables, parents first: the order an import inserts in, and (reversed) the order a
 * deletion removes in. `key` is what orders a table's rows in an export (in the "C" collation, so
 * two databases of different default collations write the same file) and what a deletion batches by.
 */
export const TENANT_TABLES = [
  { table: 'users', key: 'id' },
  { table: 'skills', key: 'id' },
  { table: 'skill_versions', key: 'id' },
  { table: 'skill_embeddings', key: 'id' },
  { table: 'skill_reviews', key: 'id' },
  { table: 'ratings', key: 'id' },
  { table: 'usage_events', key: 'id' },
  { table: 'api_keys', key: 'id' },
  { table: 'site_settings', key: 'id' },
  // The audit trail as its chain runs: the rows from before the chain (no seq), then by seq.
  { table: 'audit_logs', key: 'id' },
  { table: 'audit_signatures', key: 'seq' },
] as const

export type TenantTable = (typeof TENANT_TABLES)[number]['table']

/** What orders a table's rows in an export: the same on every database running the schema. */
export function exportOrder(table: TenantTable): string {
  if (table === 'audit_logs') return 'x.seq nulls first, x.created_at, x.id'
  if (table === 'audit_signatures') return 'x.seq'
  return 'x.id collate "C"'
}
