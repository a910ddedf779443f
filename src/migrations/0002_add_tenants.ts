import { sql, type Kysely } from 'kysely'
import { refuseDataLoss } from '../online/data-loss-guard.ts'

// Frozen: this migration's own facts, as of when it was written.
const DEFAULT_TENANT_SLUG = 'default'
/** The id the plan seeds; an existing default tenant under another id is found by slug instead. */
const DEFAULT_TENANT_SEED_ID = 'default-tenant-000-0000-000000000000'

/** The tenants table and the default tenant, which every existing row will belong to. */
export async function up(db: Kysely<any>): Promise<void> {
  await db.transaction().execute(async (trx) => {
    await trx.schema.createTable('tenants').ifNotExists()
      .addColumn('id', 'text', (c) => c.primaryKey().defaultTo(sql`gen_random_uuid()::text`))
      .addColumn('name', 'text', (c) => c.notNull())
      .addColumn('slug', 'text', (c) => c.notNull().unique())
      .addColumn('domain', 'text')
      .addColumn('logo', 'text')
      .addColumn('is_active', 'boolean', (c) => c.notNull().defaultTo(true))
      .addColumn('plan', 'text', (c) => c.notNull().defaultTo('freemium'))
      .addColumn('created_at', 'timestamp', (c) => c.notNull().defaultTo(sql`now()`))
      .addColumn('updated_at', 'timestamp', (c) => c.notNull().defaultTo(sql`now()`))
      .execute()
    await trx.insertInto('tenants')
      .values({ id: DEFAULT_TENANT_SEED_ID, name: 'Default', slug: DEFAULT_TENANT_SLUG, domain: null })
      .onConflict((oc) => oc.column('slug').doNothing())
      .execute()
  })
}

export async function down(db: Kysely<any>): Promise<void> {
  await refuseDataLoss(db, 'dropping tenants deletes tenants other than the default one', async () => {
    const { rows } = await sql`select 1 from tenants where slug <> ${DEFAULT_TENANT_SLUG} limit 1`.execute(db).catch(() => ({ rows: [] }))
    return rows.length > 0
  })
  await db.schema.dropTable('tenants').ifExists().execute()
}
