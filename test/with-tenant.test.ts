import type { Kysely } from 'kysely'
import { beforeAll, describe, expect, inject, it } from 'vitest'
import { recordAudit } from '../src/audit/record-audit.ts'
import type { DB } from '../src/db-types.ts'
import { TenantError, withTenant } from '../src/tenancy/with-tenant.ts'
import { useTestDatabase } from './support/database.ts'
import { A, attempt, B, seedTwoTenants } from './support/tenants.ts'

describe('withTenant and recordAudit', () => {
  const t = useTestDatabase('migrated')
  let app: Kysely<DB>
  beforeAll(async () => {
    await seedTwoTenants(t.admin)
    app = t.connectAs(inject('appRole'))
  })

  it('returns fn\'s result; inserts need no tenant_id; audit rows carry tenant and actor', async () => {
    const result = await withTenant(app, A, async (trx) => {
      const skill = await trx.insertInto('skills')
        .values({ name: 'New', slug: 'new', description: 'd', category: 'c', content: 'c', author_id: 'uA1' })
        .returning(['id', 'tenant_id']).executeTakeFirstOrThrow()
      await recordAudit(trx, { actorId: 'uA1', action: 'skill.create', resourceType: 'skill', resourceId: skill.id, ipAddress: '127.0.0.1', metadata: { slug: 'new' } })
      return skill
    })
    expect(result.tenant_id).toBe(A)
    const audit = await withTenant(app, A, (trx) => trx.selectFrom('audit_logs').selectAll().where('action', '=', 'skill.create').execute())
    expect(audit).toMatchObject([{ tenant_id: A, actor_id: 'uA1', resource_id: result.id, metadata: { slug: 'new' } }])
    expect(await withTenant(app, B, (trx) => trx.selectFrom('audit_logs').select('id').where('action', '=', 'skill.create').execute())).toEqual([])
  })

  it('an audit row rolls back with the change it records', async () => {
    await expect(withTenant(app, A, async (trx) => {
      await recordAudit(trx, { actorId: 'uA1', action: 'doomed' })
      throw new Error('handler failed')
    })).rejects.toThrow('handler failed')
    expect(await t.admin.selectFrom('audit_logs').select('id').where('action', '=', 'doomed').execute()).toEqual([])
  })

  it.each([
    ['empty', '', /tenant id is empty/],
    ['blank', '   ', /tenant id is empty/],
    ['oversized', 'x'.repeat(10_000), /longer than 128 characters/],
    ['NUL byte', 'a\0b', /NUL byte/],
    ['unknown', 'no-such-tenant', /unknown or inactive tenant "no-such-tenant"/],
    ['SQL-looking', "' OR 1=1 --", /unknown or inactive tenant "' OR 1=1 --"/],
  ])('rejects an %s tenant id before running fn', async (_label, id, message) => {
    let ran = false
    await expect(withTenant(app, id, async () => { ran = true })).rejects.toThrow(message)
    await expect(withTenant(app, id, async () => {})).rejects.toBeInstanceOf(TenantError)
    expect(ran).toBe(false)
  })

  it('a tenant setting that looks like SQL is a plain value: zero rows, no SQL error', async () => {
    const r = await attempt(app, { kind: 'named', id: "' OR 1=1 --" }, (trx) => trx.selectFrom('skills').select('id').execute())
    expect(r).toEqual({ ok: true, value: [] })
  })
})
