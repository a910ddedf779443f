import { sql } from 'kysely'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { startPgBouncer, type PgBouncer } from '../fixtures/pgbouncer.ts'
import { createDb } from '../src/connection/create-db.ts'
import type { DB } from '../src/db-types.ts'
import { withTenant } from '../src/tenancy/with-tenant.ts'
import { createTestDatabase, type TestDatabase } from './support/database.ts'
import { TEST_TENANT_KEY } from './support/tenant-key.ts'
import { A, B, seedTwoTenants } from './support/tenants.ts'

/**
 * Behind PgBouncer in transaction mode each transaction may land on another server connection,
 * so the pid a client sees is PgBouncer's, not the server's, and a session's challenge (0019) means
 * nothing to the next transaction. withTenant must notice and ask for the challenge in each
 * transaction, and its clean-up must run on the server connection the request used.
 */
let db: TestDatabase
let bouncer: PgBouncer | { notRun: string }
beforeAll(async () => {
  db = await createTestDatabase('migrated')
  await seedTwoTenants(db.admin)
  const u = new URL(db.url)
  u.username = inject('appRole')
  u.password = 'test'
  bouncer = await startPgBouncer(u.toString(), { poolSize: 4 })
  if ('notRun' in bouncer) console.log(`PgBouncer: not run: ${bouncer.notRun}`)
}, 60_000)
afterAll(async () => {
  if (bouncer && 'stop' in bouncer) await bouncer.stop()
  await db?.close()
})

describe('withTenant behind PgBouncer in transaction mode', () => {
  const pooled = () => createDb<DB>((bouncer as PgBouncer).url, { max: 10, tenantKey: TEST_TENANT_KEY })

  it('two tenants\' requests interleaved over 4 server connections: 0 errors, 0 rows of the other tenant', async (ctx) => {
    if ('notRun' in bouncer) return ctx.skip(`not run: ${bouncer.notRun}`)
    const app = pooled()
    try {
      let served = 0
      const outcomes = await Promise.allSettled(Array.from({ length: 2000 }, async (_, i) => {
        const tenant = i % 2 ? A : B
        const rows = await withTenant(app, tenant, async (trx) => {
          const skills = await trx.selectFrom('skills').select(['id', 'tenant_id']).execute()
          const users = await trx.selectFrom('users').select('tenant_id').execute()
          return [...skills.map((s) => s.tenant_id), ...users.map((u) => u.tenant_id)]
        })
        served++
        return { tenant, rows }
      }))
      const failed = outcomes.filter((o) => o.status === 'rejected')
      expect(failed.map((o) => String((o as PromiseRejectedResult).reason))).toEqual([])
      for (const o of outcomes) {
        const { tenant, rows } = (o as PromiseFulfilledResult<{ tenant: string; rows: string[] }>).value
        expect(rows).toEqual([tenant, tenant, tenant, tenant])
      }
      expect(served).toBe(2000)
      const servers = await sql<{ n: number }>`select count(*)::int as n from pg_stat_activity where usename = ${inject('appRole')} and datname = current_database()`.execute(db.admin)
      expect(servers.rows[0]!.n).toBeLessThanOrEqual(4)
    } finally {
      await app.destroy()
    }
  })

  it('the client sees PgBouncer\'s pid, not the server\'s, so withTenant asks for the challenge in each transaction', async (ctx) => {
    if ('notRun' in bouncer) return ctx.skip(`not run: ${bouncer.notRun}`)
    const app = pooled()
    const sent: string[] = []
    const original = pg.Client.prototype.query
    try {
      await withTenant(app, A, async () => {})
      pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
        sent.push(typeof args[0] === 'string' ? args[0] : (args[0] as { text?: string })?.text ?? '')
        return (original as (...a: unknown[]) => unknown).apply(this, args)
      } as typeof original
      await withTenant(app, B, (trx) => trx.selectFrom('skills').select('id').execute())
    } finally {
      pg.Client.prototype.query = original
      await app.destroy()
    }
    expect(sent).toEqual(['begin', 'select tenant_context.challenge() as c', 'select tenant_context.enter($1::text, $2::text)',
      'select "id" from "skills"', 'select tenant_context.clean_up(); commit'])
  })

  it('what a request leaves on its server connection is gone before the connection serves another: the clean-up runs inside the transaction', async (ctx) => {
    if ('notRun' in bouncer) return ctx.skip(`not run: ${bouncer.notRun}`)
    const app = pooled()
    try {
      // Four at once, so that every server connection behind the pooler gets one.
      await Promise.all(Array.from({ length: 4 }, () => withTenant(app, A, async (trx) => {
        await sql`set search_path = pg_catalog`.execute(trx)
        await sql`prepare carried as select id from public.skills`.execute(trx)
        await sql`select pg_advisory_lock(4242), pg_sleep(0.1)`.execute(trx)
      })))
      for (let i = 0; i < 40; i++) {
        const left = await withTenant(app, B, async (trx) => ({
          searchPath: (await sql<{ s: string }>`select current_setting('search_path') as s`.execute(trx)).rows[0]!.s,
          prepared: (await sql<{ n: number }>`select count(*)::int as n from pg_prepared_statements`.execute(trx)).rows[0]!.n,
          locks: (await sql<{ n: number }>`select count(*)::int as n from pg_locks where locktype = 'advisory'`.execute(trx)).rows[0]!.n,
        }))
        expect(left).toEqual({ searchPath: '"$user", public', prepared: 0, locks: 0 })
      }
    } finally {
      await app.destroy()
    }
  })
})

