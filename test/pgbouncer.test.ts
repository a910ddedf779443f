import { sql, type Kysely, type RawBuilder, type Transaction } from 'kysely'
import pg from 'pg'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { PGBOUNCER_MISSING, startPgBouncer, type PgBouncer } from '../fixtures/pgbouncer.ts'
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
// The default reporter counts skipped tests without their names: say why these are not run.
if (PGBOUNCER_MISSING) console.log(`PgBouncer: not run: ${PGBOUNCER_MISSING}`)

let db: TestDatabase
let bouncer: PgBouncer
let appUrl: string
beforeAll(async () => {
  if (PGBOUNCER_MISSING) return
  db = await createTestDatabase('migrated')
  await seedTwoTenants(db.admin)
  const u = new URL(db.url)
  u.username = inject('appRole')
  u.password = 'test'
  appUrl = u.toString()
  const started = await startPgBouncer(appUrl, { poolSize: 4 })
  if ('notRun' in started) throw new Error(started.notRun)
  bouncer = started
}, 60_000)
afterAll(async () => {
  await bouncer?.stop()
  await db?.close()
})

describe.skipIf(PGBOUNCER_MISSING !== undefined)(`withTenant behind PgBouncer in transaction mode${PGBOUNCER_MISSING ? ` (not run: ${PGBOUNCER_MISSING})` : ''}`, () => {
  // A request may wait for one of the 10 clients behind many others on a loaded machine.
  const pooled = () => createDb<DB>(bouncer.url, { max: 10, tenantKey: TEST_TENANT_KEY, connectionTimeoutMillis: 120_000, pipelinedWithTenant: true })

  it('two tenants\' requests interleaved over 4 server connections: 0 errors, 0 rows of the other tenant', async () => {
    const app = pooled()
    try {
      let served = 0
      const outcomes: PromiseSettledResult<{ tenant: string; rows: string[] }>[] = []
      // 16 callers, 2,000 requests in all, the two tenants interleaved.
      let next = 0
      await Promise.all(Array.from({ length: 16 }, async () => {
        for (let i = next++; i < 2000; i = next++) {
          const tenant = i % 2 ? A : B
          outcomes.push(await withTenant(app, tenant, async (trx) => {
            const skills = await trx.selectFrom('skills').select(['id', 'tenant_id']).execute()
            const users = await trx.selectFrom('users').select('tenant_id').execute()
            return [...skills.map((s) => s.tenant_id), ...users.map((u) => u.tenant_id)]
          }).then((rows) => { served++; return { status: 'fulfilled' as const, value: { tenant, rows } } }, (reason) => ({ status: 'rejected' as const, reason })))
        }
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

  it('the client sees PgBouncer\'s pid, not the server\'s, so withTenant asks for the challenge in each transaction', async () => {
    const app = pooled()
    const sent: string[] = []
    const original = pg.Client.prototype.query
    try {
      await withTenant(app, A, async () => {})
      pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
        // A batch (one-sync-batch.ts) sends several statements in one write.
        const batch = (args[0] as { statements?: { text: string }[] })?.statements
        sent.push(...(batch ? batch.map((s) => s.text) : [typeof args[0] === 'string' ? args[0] : (args[0] as { text?: string })?.text ?? '']))
        return (original as (...a: unknown[]) => unknown).apply(this, args)
      } as typeof original
      await withTenant(app, B, (trx) => trx.selectFrom('skills').select('id').execute())
    } finally {
      pg.Client.prototype.query = original
      await app.destroy()
    }
    expect(sent).toEqual(['begin isolation level read committed read write', 'select tenant_context.clean_up()', 'select tenant_context.challenge() as c', 'select tenant_context.enter($1::text, $2::text)',
      'select "id" from "skills"', 'commit'])
  })

  it('what a request leaves on its server connection is gone before the connection serves another: the clean-up runs inside the transaction', async () => {
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
          // A's lock on any server connection (not others' advisory locks: CI saw a migrator's, of another test's database).
          locks: (await sql<{ n: number }>`select count(*)::int as n from pg_locks where locktype = 'advisory' and objid = 4242 and objsubid = 1
            and database = (select oid from pg_database where datname = current_database())`.execute(trx)).rows[0]!.n,
        }))
        expect(left).toEqual({ searchPath: '"$user", public', prepared: 0, locks: 0 })
      }
    } finally {
      await app.destroy()
    }
  })

  // From an outside review: a read-only default left on a server connection made the next
  // request there read-only from its BEGIN, before the clean-up, and enter()'s setval failed.
  it('SQL that ends A\'s transaction and makes the session read-only by default: B\'s next request on that server connection still writes', async () => {
    const written = await nextRequestAfter(appUrl, sql`set default_transaction_read_only = on`, async (trx) => {
      const readOnly = (await sql<{ ro: string }>`select current_setting('transaction_read_only') as ro`.execute(trx)).rows[0]!.ro
      const updated = await trx.updateTable('skills').set({ name: 'written under a read-only default' }).where('id', '=', 'sB1').returning('id').execute()
      return { readOnly, updated: updated.map((r) => r.id) }
    })
    expect(written).toEqual({ readOnly: 'off', updated: ['sB1'] })
  })

  // BEGIN names the isolation level the session started with (read once per connection, after the
  // clean-up): before, it took the default SQL had left on the server connection.
  it('SQL that ends A\'s transaction and makes the session serializable by default: B\'s next request there runs read committed', async () => {
    expect(await nextRequestAfter(appUrl, sql`set default_transaction_isolation = serializable`,
      async (trx) => (await sql<{ i: string }>`select current_setting('transaction_isolation') as i`.execute(trx)).rows[0]!.i)).toBe('read committed')
  })

  // From an outside review: SQL in A's fn that commits, then leaves settings and an advisory lock
  // in autocommit; PgBouncer hands that server connection to B's next request.
  it('SQL that ends A\'s transaction and leaves session state: A\'s request fails, and B\'s next request on that server connection finds nothing of it', async () => {
    const one = await startPgBouncer(appUrl, { poolSize: 1 })
    if ('notRun' in one) throw new Error(one.notRun)
    const attackerApp = createDb<DB>(one.url, { max: 1, tenantKey: TEST_TENANT_KEY, pipelinedWithTenant: true })
    const victimApp = createDb<DB>(one.url, { max: 1, tenantKey: TEST_TENANT_KEY, pipelinedWithTenant: true })
    try {
      const attacker = heldAfter(attackerApp, sql`select set_config('app.leak', 'left-by-A', false), set_config('statement_timeout', '123456', false), pg_advisory_lock(4242)`)
      await attacker.left
      const seen = await withTenant(victimApp, B, async (trx) => (await sql<{ leak: string | null; locks: number; timeout: string }>`
        select current_setting('app.leak', true) as leak, current_setting('statement_timeout') as timeout,
          (select count(*)::int from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()) as locks`.execute(trx)).rows[0])
      attacker.resume()
      await expect(attacker.request).rejects.toThrow(/withTenant: (SQL in fn ended the transaction|no tenant was entered any more)/)
      expect(seen).toEqual({ leak: '', timeout: '0', locks: 0 })
    } finally {
      await attackerApp.destroy()
      await victimApp.destroy()
      await one.stop()
    }
  })
})

/**
 * A's request whose fn commits, runs `leave` outside any transaction (on the server connection
 * PgBouncer gave it, which it hands to the next transaction), and is held there until `resume()`.
 */
/**
 * Behind a PgBouncer of one server connection: B's connection has had its first request (whose
 * clean-up, outside a transaction, would undo the setting), A's request commits and leaves `leave`
 * on the server connection, then B's next request runs `request` there. A's request fails (its fn
 * ended its transaction); B's answer is returned.
 */
async function nextRequestAfter<T>(appUrl: string, leave: RawBuilder<unknown>, request: (trx: Transaction<DB>) => Promise<T>): Promise<T> {
  const one = await startPgBouncer(appUrl, { poolSize: 1 })
  if ('notRun' in one) throw new Error(one.notRun)
  const attackerApp = createDb<DB>(one.url, { max: 1, tenantKey: TEST_TENANT_KEY })
  const victimApp = createDb<DB>(one.url, { max: 1, tenantKey: TEST_TENANT_KEY })
  try {
    await withTenant(victimApp, B, async () => {})
    const attacker = heldAfter(attackerApp, leave)
    await attacker.left
    const answer = await withTenant(victimApp, B, request)
    attacker.resume()
    await expect(attacker.request).rejects.toThrow(/withTenant: (SQL in fn ended the transaction|no tenant was entered any more)/)
    return answer
  } finally {
    await attackerApp.destroy()
    await victimApp.destroy()
    await one.stop()
  }
}

function heldAfter(app: Kysely<DB>, leave: RawBuilder<unknown>) {
  let left!: () => void
  let resume!: () => void
  const reached = new Promise<void>((r) => { left = r })
  const resumed = new Promise<void>((r) => { resume = r })
  const request = withTenant(app, A, async (trx) => {
    await sql`commit`.execute(trx)
    await leave.execute(trx)
    left()
    await resumed
  })
  request.catch(() => {})
  return { left: reached, resume, request }
}
