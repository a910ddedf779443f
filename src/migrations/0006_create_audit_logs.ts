import { sql, type Kysely } from 'kysely'
import { appendOnly } from '../online/append-only.ts'
import { guardDown, refuseDataLoss } from '../online/data-loss-guard.ts'
import { withLockRetry } from '../online/lock-retry.ts'
import { appRoleName } from '../online/app-role.ts'
import { grant } from '../online/grant.ts'
import { rowSecurity } from '../online/row-security.ts'
import { applySteps, revertSteps, type Step } from '../online/step.ts'
import { ownerIfConfinable } from '../online/table-owner.ts'

// Frozen: the table, its policies and grants are this migration's own, as of when it was written.

const table: Step = {
  name: 'table audit_logs',
  async up(db) {
    await withLockRetry(db, 'audit_logs', async (trx) => {
      await trx.schema.createTable('audit_logs').ifNotExists()
        .addColumn('id', 'uuid', (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()`))
        .addColumn('actor_id', 'text')
        // Written inside withTenant: the row belongs to the current tenant unless told otherwise.
        .addColumn('tenant_id', 'text', (c) => c.defaultTo(sql`nullif(current_setting('app.current_tenant_id', true), '')`))
        .addColumn('action', 'text', (c) => c.notNull())
        .addColumn('resource_type', 'text')
        .addColumn('resource_id', 'text')
        .addColumn('ip_address', 'text')
        .addColumn('metadata', 'jsonb')
        .addColumn('created_at', 'timestamptz', (c) => c.notNull().defaultTo(sql`now()`))
        .execute()
      // A new, empty table: plain index builds lock nothing anyone is using.
      await sql`create index if not exists audit_logs_tenant_created_idx on audit_logs (tenant_id, created_at desc)`.execute(trx)
      await sql`create index if not exists audit_logs_actor_idx on audit_logs (actor_id, created_at desc)`.execute(trx)
      await sql`create index if not exists audit_logs_action_idx on audit_logs (action, created_at desc)`.execute(trx)
    })
  },
  async down(db) {
    await withLockRetry(db, 'audit_logs', (trx) => trx.schema.dropTable('audit_logs').ifExists().execute())
  },
}

/** The append-only audit trail: each tenant reads and writes only its own rows; nobody rewrites it. */
const steps: Step[] = [
  table,
  appendOnly('audit_logs'),
  rowSecurity('audit_logs', [
    { name: 'tenant_isolation', to: async (db) => [await appRoleName(db)], condition: sql`tenant_id = nullif(current_setting('app.current_tenant_id', true), '')` },
    // The migrator's checks (is the trail empty?) see every row without a superuser; see 0005.
    {
      name: 'owner_all_tenants',
      to: ownerIfConfinable('audit_logs'),
      condition: sql`current_setting('skills_db.all_tenants', true) = 'on'`,
    },
  ]),
  grant('audit_logs', ['select', 'insert']),
  guardDown('audit trail is empty', (db) =>
    refuseDataLoss(db, 'dropping audit_logs deletes the audit trail', async () => {
      const { rows } = await sql`select 1 from audit_logs limit 1`.execute(db).catch(() => ({ rows: [] }))
      return rows.length > 0
    })),
]

export const up = (db: Kysely<any>) => applySteps(db, steps)
export const down = (db: Kysely<any>) => revertSteps(db, steps)
