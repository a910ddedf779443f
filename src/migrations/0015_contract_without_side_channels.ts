import { sql, type Kysely } from 'kysely'
import { index } from '../online/concurrent-index.ts'
import { where } from '../online/conditional-step.ts'
import { DownBlocked, guardDown } from '../online/data-loss-guard.ts'
import { withoutStatistics } from '../online/statistics.ts'
import { applySteps, reverse, revertSteps, type Step } from '../online/step.ts'

/**
 * The contract phase after the open phase: 0010, written before it, brings back what 0014 took away
 * wherever it runs after it (a global index on api_keys.key_hash), and leaves the single-tenant
 * app's keys of the internal collation, which a contracted schema no longer needs (every key there
 * is per tenant, as Citus wants). On a database contracted before 0014, there is nothing to do.
 */
export const phase = 'contract'

// Frozen: the tables and indexes below are this migration's own, as of when it was written
// (see README.md in this folder).
const INTERNAL_KEYS = [
  { table: 'users', name: 'users_id_any_tenant', columns: ['id'] },
  { table: 'skills', name: 'skills_id_any_tenant', columns: ['id'] },
  { table: 'ratings', name: 'ratings_id_any_tenant', columns: ['id'] },
  { table: 'usage_events', name: 'usage_events_id_any_tenant', columns: ['id'] },
  { table: 'skill_versions', name: 'skill_versions_id_any_tenant', columns: ['id'] },
  { table: 'skill_embeddings', name: 'skill_embeddings_id_any_tenant', columns: ['id'] },
  { table: 'skill_reviews', name: 'skill_reviews_id_any_tenant', columns: ['id'] },
  { table: 'api_keys', name: 'api_keys_id_any_tenant', columns: ['id'] },
  { table: 'ratings', name: 'ratings_skill_user_any_tenant', columns: ['skill_id', 'user_id'] },
  { table: 'api_keys', name: 'api_keys_key_hash_any_tenant', columns: ['key_hash'] },
]
const TABLES = [
  'users', 'skills', 'ratings', 'usage_events', 'skill_versions', 'skill_embeddings',
  'skill_reviews', 'api_keys', 'site_settings', 'audit_logs', 'audit_signatures', 'tenants',
] as const

async function indexExists(db: Kysely<any>, name: string): Promise<boolean> {
  const { rows } = await sql`select 1 from pg_catalog.pg_class where oid = pg_catalog.to_regclass(${`public.${name}`}::text)`.execute(db)
  return rows.length > 0
}

const steps: Step[] = [
  where('0015 drop api_keys_key_hash_idx', (db) => indexExists(db, 'api_keys_key_hash_idx'), [
    reverse(index({ table: 'api_keys', name: 'api_keys_key_hash_idx', columns: ['key_hash'] })),
  ]),
  ...INTERNAL_KEYS.map((spec) => where(`0015 drop ${spec.name}`, (db) => indexExists(db, spec.name), [
    reverse(index({ ...spec, unique: true, collate: 'skills_db.internal' })),
  ])),
  // 0010 converted timestamps and analyzed: no column may have gained statistics on the way.
  ...TABLES.map((table) => ({ ...withoutStatistics(table, { stillCollecting: true }), down: async () => {} })),
  {
    name: 'nothing the app role reads leaks another tenant\'s values',
    async up(db) {
      const { rows } = await sql<{ v: string }>`select v from skills_db.side_channel_violations() v`.execute(db)
      if (rows.length > 0) throw new Error(`after 0015, still: ${rows.map((r) => r.v).join('; ')}`)
    },
    async down() {},
  },
  guardDown('a single tenant', async (db) => {
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from tenants`.execute(db)
    if (rows[0]!.n > 1) {
      throw new DownBlocked(`cannot roll back the contract phase: the database has ${rows[0]!.n} tenants, and rolling it back brings back the single-tenant app's global keys, through which the app role observes other tenants' values; delete the other tenants first`)
    }
  }),
]

export const up = (db: Kysely<any>) => applySteps(db, steps)
export const down = (db: Kysely<any>) => revertSteps(db, steps)
