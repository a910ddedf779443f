import { sql, type Kysely } from 'kysely'
import { beforeAll, describe, expect, inject, it } from 'vitest'
import type { DB } from '../src/db-types.ts'
import { resolveApiKey } from '../src/tenancy/resolve-api-key.ts'
import { withMigrationLock } from '../src/migrator/migration-lock.ts'
import { withTenant } from '../src/tenancy/with-tenant.ts'
import { useTestDatabase } from './support/database.ts'
import { A, attempt, B, seedTwoTenants } from './support/tenants.ts'

/** Every reference between data tables, and a row of tenant B that tries to point at tenant A's parent. */
const REFERENCES: { table: keyof DB & string; column: string; parentOfA: string; row: Record<string, unknown> }[] = [
  { table: 'skills', column: 'author_id', parentOfA: 'uA1', row: { id: 'x', name: 'n', slug: 'x', description: 'd', category: 'c', content: 'c' } },
  { table: 'ratings', column: 'skill_id', parentOfA: 'sA2', row: { id: 'x', user_id: 'uB1', rating: 1 } },
  { table: 'ratings', column: 'user_id', parentOfA: 'uA1', row: { id: 'x', skill_id: 'sB2', rating: 1 } },
  { table: 'usage_events', column: 'skill_id', parentOfA: 'sA1', row: { id: 'x', tool_name: 't' } },
  { table: 'usage_events', column: 'user_id', parentOfA: 'uA1', row: { id: 'x', tool_name: 't' } },
  { table: 'skill_versions', column: 'skill_id', parentOfA: 'sA1', row: { id: 'x', version: 7, content_url: 'u', content_hash: 'h', content_type: 't', name: 'n', description: 'd' } },
  { table: 'skill_versions', column: 'created_by', parentOfA: 'uA1', row: { id: 'x', skill_id: 'sB1', version: 8, content_url: 'u', content_hash: 'h', content_type: 't', name: 'n', description: 'd' } },
  { table: 'skill_embeddings', column: 'skill_id', parentOfA: 'sA2', row: { id: 'x', embedding: [1], model_name: 'm', model_version: '1', input_hash: 'i' } },
  { table: 'skill_reviews', column: 'skill_id', parentOfA: 'sA2', row: { id: 'x', categories: '{}', summary: 's', reviewed_content_hash: 'h', model_name: 'm' } },
  { table: 'skill_reviews', column: 'requested_by', parentOfA: 'uA1', row: { id: 'x', skill_id: 'sB2', categories: '{}', summary: 's', reviewed_content_hash: 'h', model_name: 'm' } },
  { table: 'api_keys', column: 'user_id', parentOfA: 'uA1', row: { id: 'x', key_hash: 'hx', key_prefix: 'p', name: 'n' } },
]

describe('tenant rules, as the application role', () => {
  const t = useTestDatabase('migrated')
  let app: Kysely<DB>
  beforeAll(async () => {
    await seedTwoTenants(t.admin)
    app = t.connectAs(inject('appRole'))
  })

  it.each(REFERENCES.map((r) => [`${r.table}.${r.column}`, r] as const))('tenant B cannot reference tenant A\'s row through %s', async (_name, { table, column, parentOfA, row }) => {
    const inserted = await attempt(app, { kind: 'tenant', id: B }, (trx) => trx.insertInto(table).values({ ...row, [column]: parentOfA } as never).execute())
    expect(inserted).toMatchObject({ ok: false, error: { code: '23503', message: expect.stringContaining(`${table}_${column}_tenant_fk`) } })
    // Pointing an existing row of B at A's row fails the same way.
    const updated = await attempt(app, { kind: 'tenant', id: B }, (trx) =>
      trx.updateTable(table).set({ [column]: parentOfA } as never).where('tenant_id', '=', B).execute())
    expect(updated).toMatchObject({ ok: false, error: { code: '23503', message: expect.stringContaining(`${table}_${column}_tenant_fk`) } })
  })

  it('deleting a parent nulls only the reference; the child keeps its tenant', async () => {
    let checked = false
    await expect(withTenant(app, A, async (trx) => {
      await trx.deleteFrom('users').where('id', '=', 'uA1').execute()
      const skill = await trx.selectFrom('skills').select(['author_id', 'tenant_id']).where('id', '=', 'sA1').executeTakeFirstOrThrow()
      expect(skill).toEqual({ author_id: null, tenant_id: A })
      const event = await trx.selectFrom('usage_events').select(['user_id', 'skill_id', 'tenant_id']).where('id', '=', 'eA1').executeTakeFirstOrThrow()
      expect(event).toEqual({ user_id: null, skill_id: 'sA1', tenant_id: A })
      // Cascades stay within the tenant too.
      expect(await trx.selectFrom('ratings').select('id').where('user_id', '=', 'uA1').execute()).toEqual([])
      checked = true
      // Undo the delete for the other tests: a failed assertion above fails this test instead.
      throw Object.assign(new Error('rollback'), { rollback: true })
    })).rejects.toMatchObject({ rollback: true })
    expect(checked).toBe(true)
  })

  it('the same slug in two tenants is allowed, twice in one tenant it is not', async () => {
    const both = await t.admin.selectFrom('skills').select('tenant_id').where('slug', '=', 'lint').orderBy('tenant_id').execute()
    expect(both).toEqual([{ tenant_id: A }, { tenant_id: B }])
    const twice = await attempt(app, { kind: 'tenant', id: A }, (trx) =>
      trx.insertInto('skills').values({ name: 'n', slug: 'lint', description: 'd', category: 'c', content: 'c' }).execute())
    expect(twice).toMatchObject({ ok: false, error: { code: '23505', message: expect.stringContaining('skills_tenant_slug_unique') } })
  })

  it('an email may exist in two tenants; a tenant learns nothing about the other\'s emails', async () => {
    const dup = await attempt(app, { kind: 'tenant', id: B }, (trx) => trx.insertInto('users').values({ email: 'al@a' }).execute())
    expect(dup.ok).toBe(true)
  })

  it('each tenant has its own default site settings row', async () => {
    for (const [tenant, model] of [[A, 'model-a'], [B, 'model-b']]) {
      const rows = await withTenant(app, tenant!, (trx) => trx.selectFrom('site_settings').select(['id', 'ollama_model']).execute())
      expect(rows).toEqual([{ id: 'default', ollama_model: model }])
    }
  })

  it('an API key resolves to its own tenant and user, only when exact, unrevoked and unexpired, and only in the tenant it names', async () => {
    expect(await resolveApiKey(app, { tenantId: A, keyHash: 'hash-a' })).toEqual({ tenantId: A, userId: 'uA1' })
    expect(await resolveApiKey(app, { tenantId: B, keyHash: 'hash-b' })).toEqual({ tenantId: B, userId: 'uB1' })
    for (const key of ['hash-a-revoked', 'hash-a-expired', 'hash-', '%', 'hash-a%', "' or 1=1 --"]) {
      expect(await resolveApiKey(app, { tenantId: A, keyHash: key }), key).toBeUndefined()
    }
    // Presented as another tenant's, or as one that names no tenant (the default tenant's), a key resolves to nobody.
    expect(await resolveApiKey(app, { tenantId: B, keyHash: 'hash-a' })).toBeUndefined()
    expect(await resolveApiKey(app, 'hash-a')).toBeUndefined()
    expect(await resolveApiKey(app, { tenantId: "' or 1=1 --", keyHash: 'hash-a' })).toBeUndefined()
    // ... and app_user cannot read api_keys across tenants directly.
    expect(await app.selectFrom('api_keys').select('id').execute()).toEqual([])
  })

  it('audit_logs: no UPDATE, DELETE or TRUNCATE — not for the application role, not for the owner, not for a superuser', async () => {
    const owner = t.connectAs(inject('ownerRole'), 'test', 1) as Kysely<any>
    // TRUNCATE with the signatures that reference the rows, so that the trigger, not the foreign key, answers.
    const statements = [sql`update audit_logs set action = 'x'`, sql`delete from audit_logs`, sql`truncate audit_logs, audit_signatures`]
    for (const statement of statements) {
      await expect(attempt(app, { kind: 'tenant', id: A }, (trx) => statement.execute(trx)).then((r) => !r.ok && r.error.message)).resolves.toMatch(/permission denied for table audit_(logs|signatures)/)
      await expect(t.admin.transaction().execute((trx) => statement.execute(trx))).rejects.toThrow(/audit_(logs|signatures) is append-only: (UPDATE|DELETE|TRUNCATE) is not allowed/)
    }
    // The owner: the setting that gave it every tenant's rows gives it none now; with the migrator's
    // view (it holds the migration lock) row security is not what stops it: the triggers are.
    for (const statement of statements.slice(0, 2)) {
      const r = await owner.transaction().execute(async (trx) => {
        await sql`select set_config('skills_db.all_tenants', 'on', true)`.execute(trx)
        return statement.execute(trx)
      })
      expect(Number(r.numAffectedRows)).toBe(0)
    }
    await owner.connection().execute((conn) => withMigrationLock(conn, async () => {
      for (const statement of statements) {
        await expect(conn.transaction().execute((trx) => statement.execute(trx))).rejects.toThrow(/audit_(logs|signatures) is append-only: (UPDATE|DELETE|TRUNCATE) is not allowed/)
      }
    }))
    const { rows } = await sql`select tableowner from pg_tables where tablename = 'audit_logs'`.execute(t.admin)
    expect(rows).toEqual([{ tableowner: inject('ownerRole') }])
    expect(await t.admin.selectFrom('audit_logs').select('action').execute()).toHaveLength(2)
  })

  it('a pool of one connection: tenant A\'s transaction, then tenant B\'s, sees no A rows', async () => {
    const single = t.connectAs(inject('appRole'), 'test', 1)
    const seenByA = await withTenant(single, A, (trx) => trx.selectFrom('skills').select('tenant_id').execute())
    expect(seenByA.map((r) => r.tenant_id)).toEqual([A, A])
    const seenByB = await withTenant(single, B, (trx) => trx.selectFrom('skills').select('tenant_id').execute())
    expect(seenByB.map((r) => r.tenant_id)).toEqual([B, B])
    // After the transactions: nothing of either tenant is left on the connection.
    expect(await single.selectFrom('skills').select('id').execute()).toEqual([])
    const { rows } = await sql<{ v: string | null }>`select current_setting('app.current_tenant_id', true) as v`.execute(single)
    expect(rows[0]!.v ?? '').toBe('')
  })
})
