import { sql, type Kysely } from 'kysely'
import { beforeAll, describe, expect, inject, it } from 'vitest'
import { recordAudit } from '../src/audit/record-audit.ts'
import { createDb } from '../src/connection/create-db.ts'
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

  it('db.destroy() closes the connections withTenant opened (a newcomer\'s script waited 10 s for the pool\'s idle timeout)', async () => {
    const u = new URL(t.url)
    u.username = inject('appRole')
    u.password = 'test'
    const name = `destroy-test-${process.pid}`
    const own = createDb<DB>(u.toString(), { max: 3, applicationName: name })
    await Promise.all([A, B, A].map((tenant) => withTenant(own, tenant, (trx) => trx.selectFrom('skills').select('id').execute())))
    const open = async () => (await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity where application_name = ${name}`.execute(t.admin)).rows[0]!.n
    expect(await open()).toBeGreaterThan(0)
    await own.destroy()
    // The server sees a session go a moment after its client ends it.
    for (let i = 0; i < 50 && (await open()) > 0; i++) await new Promise((r) => setTimeout(r, 20))
    expect(await open()).toBe(0)
  })

  it('an audit row rolls back with the change it records', async () => {
    await expect(withTenant(app, A, async (trx) => {
      await recordAudit(trx, { actorId: 'uA1', action: 'doomed' })
      throw new Error('handler failed')
    })).rejects.toThrow('handler failed')
    expect(await t.admin.selectFrom('audit_logs').select('id').where('action', '=', 'doomed').execute()).toEqual([])
  })

  // Citus's two rollbacks withTenant runs a request again for (raised here by the server as Citus
  // raises them: the online copy's switch, the distributed deadlock victim); the first try's
  // writes are gone, the second's committed. Any other error, even of the same class, is not.
  // As if distributed: distribute records this before it replaces the tenant context, and
  // session_challenge() then answers NULL, which tells withTenant it is on Citus.
  async function asOnCitus<T>(fn: (app: Kysely<DB>) => Promise<T>): Promise<T> {
    await sql`insert into skills_db.settings (key, value) values ('citus_replaced_functions', '[]')`.execute(t.admin)
    const citusApp = t.connectAs(inject('appRole'))
    try {
      return await fn(citusApp)
    } finally {
      await citusApp.destroy()
      await sql`delete from skills_db.settings where key = 'citus_replaced_functions'`.execute(t.admin)
    }
  }

  it.each([
    ['40001', 'shard for the given value does not exist', 2],
    ['40P01', 'canceling the transaction since it was involved in a distributed deadlock', 2],
    ['40P01', 'deadlock detected', 1],
    ['40001', 'could not serialize access due to concurrent update', 1],
  ])('a request Citus rolled back with %s "%s" runs %i time(s)', async (code, message, runs) => asOnCitus(async (app) => {
    const action = `retried ${code} ${message}`
    let tries = 0
    const outcome = await withTenant(app, A, async (trx) => {
      tries++
      await recordAudit(trx, { actorId: 'uA1', action })
      if (tries === 1) await sql.raw(`do $$ begin raise exception using errcode = '${code}', message = '${message}'; end $$`).execute(trx)
      return tries
    }).catch((e: Error) => e)
    expect(tries).toBe(runs)
    if (runs === 1) expect(outcome).toMatchObject({ code, message })
    else expect(outcome).toBe(2)
    const rows = await t.admin.selectFrom('audit_logs').select('id').where('action', '=', action).execute()
    expect(rows).toHaveLength(runs === 1 ? 0 : 1)
  }))

  it('a request Citus rolls back each time is run 3 times in all, then fails with Citus\'s error', async () => asOnCitus(async (app) => {
    let tries = 0
    const outcome = await withTenant(app, A, async (trx) => {
      tries++
      await sql.raw(`do $$ begin raise exception using errcode = '40001', message = 'shard for the given value does not exist'; end $$`).execute(trx)
    }).catch((e: Error) => e)
    expect(tries).toBe(3)
    expect(outcome).toMatchObject({ code: '40001', message: 'shard for the given value does not exist' })
  }))

  it('on one server, SQL raising Citus\'s codes and messages does not make fn run again, with createDb\'s pipelinedWithTenant (an outside review ran it 3 times)', async () => {
    const app = t.connectAs(inject('appRole'), 'test', 4, { pipelinedWithTenant: true })
    for (const [code, message] of [['40001', 'shard for the given value does not exist'], ['40P01', 'canceling the transaction since it was involved in a distributed deadlock']]) {
      let tries = 0
      const outcome = await withTenant(app, A, async (trx) => {
        tries++
        await sql.raw(`do $$ begin raise exception using errcode = '${code}', message = '${message}'; end $$`).execute(trx)
      }).catch((e: Error) => e)
      expect(tries).toBe(1)
      expect(outcome).toMatchObject({ code, message })
    }
  })

  it.each([
    ['empty', '', /tenant id is empty/],
    ['blank', '   ', /tenant id is empty/],
    ['oversized', 'x'.repeat(10_000), /longer than 128 characters/],
    ['NUL byte', 'a\0b', /NUL byte/],
    ['unknown', 'no-such-tenant', /unknown or inactive tenant "no-such-tenant"/],
    ['SQL-looking', "' OR 1=1 --", /unknown or inactive tenant "' OR 1=1 --"/],
  ])('rejects an %s tenant id, and no statement of fn\'s runs', async (_label, id, message) => {
    // fn's first statement goes with the entry, behind enter(): refused, it is skipped, and fails with the refusal.
    let ran = false
    await expect(withTenant(app, id, async (trx) => { await trx.selectFrom('skills').select('id').execute(); ran = true })).rejects.toThrow(message)
    await expect(withTenant(app, id, async () => {})).rejects.toBeInstanceOf(TenantError)
    expect(ran).toBe(false)
  })

  it('a tenant setting that looks like SQL is a plain value: zero rows, no SQL error', async () => {
    const r = await attempt(app, { kind: 'named', id: "' OR 1=1 --" }, (trx) => trx.selectFrom('skills').select('id').execute())
    expect(r).toEqual({ ok: true, value: [] })
  })
})
