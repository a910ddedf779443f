import { createHmac } from 'node:crypto'
import { sql, type Kysely } from 'kysely'
import { beforeAll, describe, expect, inject, it } from 'vitest'
import { createDb } from '../src/connection/create-db.ts'
import type { DB } from '../src/db-types.ts'
import { migrateToLatest } from '../src/migrator/migrate.ts'
import { hmacPads, storedTenantKeyIds } from '../src/migrator/tenant-context-keys.ts'
import { parseTenantKey, signTenantContext } from '../src/tenancy/tenant-key.ts'
import { TenantError, withTenant } from '../src/tenancy/with-tenant.ts'
import { useTestDatabase } from './support/database.ts'
import { TEST_TENANT_KEY } from './support/tenant-key.ts'
import { A, seedTwoTenants } from './support/tenants.ts'

const OLD = TEST_TENANT_KEY
const NEW = 'next:' + 'n'.repeat(40)

describe('tenant keys: what withTenant signs with, and the database checks against', () => {
  const t = useTestDatabase('migrated')
  const appRole = inject('appRole')
  const appAs = (tenantKey?: string) => {
    const u = new URL(t.url)
    u.username = appRole
    u.password = 'test'
    return createDb<DB>(u.toString(), { max: 1, ...(tenantKey === undefined ? {} : { tenantKey }) })
  }
  const sees = (db: Kysely<DB>) => withTenant(db, A, async (trx) => (await trx.selectFrom('skills').select('tenant_id').execute()).map((r) => r.tenant_id))
  beforeAll(async () => {
    await seedTwoTenants(t.admin)
  })

  it('the database\'s pads give the same HMAC as Node\'s, for short and long secrets', async () => {
    for (const text of [OLD, `long:${'L'.repeat(100)}`]) {
      const key = parseTenantKey(text, 'test')
      const { inner, outer } = hmacPads(key)
      const { rows } = await sql<{ h: string }>`select encode(sha256(${outer}::bytea || sha256(${inner}::bytea || convert_to('t:1:2', 'UTF8'))), 'hex') as h`.execute(t.admin)
      expect(rows[0]!.h).toBe(createHmac('sha256', key.secret).update('t:1:2').digest('hex'))
      expect(signTenantContext(key, 't', '1:2')).toBe(`${key.id}:${rows[0]!.h}`)
    }
  })

  it('a rotation: both keys work while the database holds both, then only the new one', async () => {
    const oldApp = appAs(OLD)
    const newApp = appAs(NEW)
    try {
      await expect(sees(newApp)).rejects.toThrow(new TenantError('the tenant context is signed with key "next", which the database does not hold: add it to the migrator\'s SKILLS_DB_TENANT_KEYS (or tenantKeys), or give the app a key listed there'))
      expect(await migrateToLatest(t.admin, { appRole, tenantKeys: [NEW, OLD] })).toMatchObject({ status: 'up-to-date' })
      expect(await storedTenantKeyIds(t.admin)).toEqual(['next', 'test'])
      expect(await sees(oldApp)).toEqual([A, A])
      expect(await sees(newApp)).toEqual([A, A])
      expect(await migrateToLatest(t.admin, { appRole, tenantKeys: [NEW] })).toMatchObject({ status: 'up-to-date' })
      expect(await storedTenantKeyIds(t.admin)).toEqual(['next'])
      await expect(sees(oldApp)).rejects.toThrow(/signed with key "test", which the database does not hold/)
      expect(await sees(newApp)).toEqual([A, A])
    } finally {
      await migrateToLatest(t.admin, { appRole, tenantKeys: [OLD] })
      await Promise.all([oldApp.destroy(), newApp.destroy()])
    }
  })

  it('a key with the right id and another secret is refused, saying the keys differ', async () => {
    const wrong = appAs(`test:${'w'.repeat(40)}`)
    try {
      await expect(sees(wrong)).rejects.toThrow(/the tenant context signature is not valid for this session's challenge: the app's key and the database's copy of it differ/)
    } finally {
      await wrong.destroy()
    }
  })

  it('no key in the app, or a malformed one: withTenant says what to set, before it connects', async () => {
    const saved = process.env.SKILLS_DB_TENANT_KEY
    delete process.env.SKILLS_DB_TENANT_KEY
    const none = appAs()
    const short = appAs('k:short')
    try {
      await expect(sees(none)).rejects.toThrow(new TenantError('withTenant has no tenant key: pass createDb(url, { tenantKey }) or set SKILLS_DB_TENANT_KEY to one of the keys the migrator was given (SKILLS_DB_TENANT_KEYS; on a checkout\'s embedded development server, . .data/dev-keys.env sets it)'))
      await expect(sees(short)).rejects.toThrow(/createDb option tenantKey: the secret of key "k" has 5 characters; use at least 32/)
      process.env.SKILLS_DB_TENANT_KEY = 'no-colon'
      await expect(sees(none)).rejects.toThrow(/SKILLS_DB_TENANT_KEY must look like <id>:<secret>/)
    } finally {
      process.env.SKILLS_DB_TENANT_KEY = saved
      await Promise.all([none.destroy(), short.destroy()])
    }
  })

  it('no key in the database: withTenant fails closed, saying to run the migrator with keys', async () => {
    const app = appAs(OLD)
    try {
      await sql`delete from skills_db.tenant_context_keys`.execute(t.admin)
      await expect(sees(app)).rejects.toThrow(/the database holds no tenant context key: run the migrator with SKILLS_DB_TENANT_KEYS/)
      const logged: string[] = []
      await migrateToLatest(t.admin, { appRole, logger: { info: (m) => logged.push(m) } })
      expect(logged).toContain('no tenant key is stored yet: withTenant refuses every tenant until the migrator is given the app\'s key (tenantKeys; the CLI reads SKILLS_DB_TENANT_KEYS)')
    } finally {
      await migrateToLatest(t.admin, { appRole, tenantKeys: [OLD] })
      await app.destroy()
    }
  })

  it.each([
    ['three keys', [OLD, NEW, `third:${'3'.repeat(40)}`], /lists 3 keys; the database holds at most two/],
    ['the same id twice', [OLD, `test:${'x'.repeat(40)}`], /lists key "test" twice/],
    ['a short secret', ['k:short'], /the secret of key "k" has 5 characters/],
    ['no key at all', [''], /lists no key/],
  ])('the migrator refuses %s, changing nothing', async (_label, keys, message) => {
    const before = await storedTenantKeyIds(t.admin)
    expect(await migrateToLatest(t.admin, { appRole, tenantKeys: keys })).toMatchObject({ status: 'error', error: { message: expect.stringMatching(message) } })
    expect(await storedTenantKeyIds(t.admin)).toEqual(before)
  })
})
