import { CompiledQuery, Kysely, PostgresDialect, sql, type Transaction } from 'kysely'
import pg from 'pg'
import { afterEach, beforeAll, describe, expect, inject, it } from 'vitest'
import { createDb } from '../src/connection/create-db.ts'
import type { DB } from '../src/db-types.ts'
import { parseTenantKey, signTenantContext } from '../src/tenancy/tenant-key.ts'
import { withTenant } from '../src/tenancy/with-tenant.ts'
import { useTestDatabase } from './support/database.ts'
import { TEST_TENANT_KEY } from './support/tenant-key.ts'
import { A, B, seedTwoTenants } from './support/tenants.ts'

const KEY = parseTenantKey(TEST_TENANT_KEY, 'test key')
/** The way of withTenant these tests are about (createDb's option; the default since 08f475f, named so that a change of default does not change what they test). */
const PIPELINED = { pipelinedWithTenant: true }
const OTHER_KEY = parseTenantKey('test:ffffffffffffffffffffffffffffffff-other', 'other key')

/**
 * Migration 0019's entry (issue 18): the challenge is the session's pid and mark, which only
 * session_challenge() and enter() move, so the app signs before it asks and sends BEGIN and
 * enter() together. The attacks on it are those 0008's challenge stood against: a signature used
 * in another session, used twice, or kept from before the mark moved.
 */
describe('entering with the session\'s challenge (0019)', () => {
  const t = useTestDatabase('migrated')
  const role = inject('appRole')
  let url: string
  const clients: pg.Client[] = []
  beforeAll(async () => {
    await seedTwoTenants(t.admin)
    const u = new URL(t.url)
    u.username = role
    u.password = 'test'
    url = u.toString()
  })
  afterEach(async () => {
    await Promise.all(clients.splice(0).map((c) => c.end().catch(() => {})))
  })

  /** A session of the app role, and its challenge. */
  async function session(): Promise<{ client: pg.Client; challenge: string }> {
    const client = new pg.Client({ connectionString: url })
    client.on('error', () => {})
    await client.connect()
    clients.push(client)
    const { rows } = await client.query<{ c: string }>('select tenant_context.session_challenge() as c')
    return { client, challenge: rows[0]!.c }
  }
  const enter = (client: pg.Client, tenant: string, challenge: string, signature: string) =>
    client.query<{ next: string }>('select tenant_context.enter($1::text, $2::text, $3::text) as next', [tenant, challenge, signature])
  const skills = async (client: pg.Client) => (await client.query<{ id: string }>('select id from skills order by id')).rows.map((r) => r.id)

  it('the challenge names the session\'s pid; enter() accepts its signature once and answers the next challenge', async () => {
    const s = await session()
    const pid = (await s.client.query<{ pid: number }>('select pg_backend_pid() as pid')).rows[0]!.pid
    expect(s.challenge).toMatch(new RegExp(`^${pid}:-?\\d+$`))
    await s.client.query('begin')
    const { rows } = await enter(s.client, B, s.challenge, signTenantContext(KEY, B, s.challenge))
    expect(await skills(s.client)).toEqual(['sB1', 'sB2'])
    await s.client.query('commit')
    expect(rows[0]!.next).toMatch(new RegExp(`^${pid}:-?\\d+$`))
    expect(rows[0]!.next).not.toBe(s.challenge)
    // The answered challenge is good for the next transaction.
    await s.client.query('begin')
    await enter(s.client, A, rows[0]!.next, signTenantContext(KEY, A, rows[0]!.next))
    expect(await skills(s.client)).toEqual(['sA1', 'sA2'])
    await s.client.query('commit')
  })

  it('a signature used once is refused the second time, in a later transaction of the same session', async () => {
    const s = await session()
    const signature = signTenantContext(KEY, B, s.challenge)
    await s.client.query('begin')
    await enter(s.client, B, s.challenge, signature)
    await s.client.query('commit')
    await s.client.query('begin')
    await expect(enter(s.client, B, s.challenge, signature)).rejects.toMatchObject({ code: 'TC001' })
    await s.client.query('rollback')
    await s.client.query('begin')
    expect(await skills(s.client)).toEqual([])
    await s.client.query('rollback')
  })

  it('a signature made for one session is refused in another', async () => {
    const victim = await session()
    const attacker = await session()
    const signature = signTenantContext(KEY, B, victim.challenge)
    await attacker.client.query('begin')
    await expect(enter(attacker.client, B, victim.challenge, signature)).rejects.toMatchObject({ code: 'TC001' })
    await attacker.client.query('rollback')
    // Nor with the attacker's own challenge: the signature is over the victim's.
    await attacker.client.query('begin')
    await expect(enter(attacker.client, B, attacker.challenge, signature)).rejects.toThrow(/signature is not valid/)
    await attacker.client.query('rollback')
  })

  it('once session_challenge() is asked again, a signature for the earlier challenge is refused', async () => {
    const s = await session()
    const signature = signTenantContext(KEY, B, s.challenge)
    const again = (await s.client.query<{ c: string }>('select tenant_context.session_challenge() as c')).rows[0]!.c
    expect(again).not.toBe(s.challenge)
    await s.client.query('begin')
    await expect(enter(s.client, B, s.challenge, signature)).rejects.toMatchObject({ code: 'TC001' })
    await s.client.query('rollback')
  })

  it('refuses a signature of another tenant, of another key, a tenant that does not exist, and a session never challenged', async () => {
    const s = await session()
    const tries: [string, string, RegExp][] = [
      [B, signTenantContext(KEY, A, s.challenge), /signature is not valid/],
      [B, signTenantContext(OTHER_KEY, B, s.challenge), /signature is not valid/],
      [B, `nokey:${signTenantContext(KEY, B, s.challenge).split(':')[1]}`, /signed with key "nokey", which the database does not hold/],
      ['no-such-tenant', signTenantContext(KEY, 'no-such-tenant', s.challenge), /unknown or inactive tenant "no-such-tenant"/],
    ]
    for (const [tenant, signature, message] of tries) {
      await s.client.query('begin')
      await expect(enter(s.client, tenant, s.challenge, signature)).rejects.toThrow(message)
      await s.client.query('rollback')
    }
    // A refusal leaves the mark where it was: the challenge still serves, once.
    await s.client.query('begin')
    await enter(s.client, B, s.challenge, signTenantContext(KEY, B, s.challenge))
    await s.client.query('commit')
    const fresh = new pg.Client({ connectionString: url })
    fresh.on('error', () => {})
    await fresh.connect()
    clients.push(fresh)
    await fresh.query('begin')
    await expect(enter(fresh, B, s.challenge, signTenantContext(KEY, B, s.challenge))).rejects.toThrow(/currval of sequence "session_tenant" is not yet defined|not this session's current one/)
    await fresh.query('rollback')
  })

  it('the app role can neither read nor move the mark', async () => {
    const s = await session()
    for (const statement of [
      `select setval('tenant_context.session_tenant', 1)`,
      `select currval('tenant_context.session_tenant')`,
      `select last_value from tenant_context.session_tenant`,
    ]) {
      await expect(s.client.query(statement)).rejects.toThrow(/permission denied/)
    }
  })

  it('withTenant\'s statements show the other sessions of the role no tenant and no signature (pg_stat_activity)', async () => {
    const app = createDb<DB>(url, { max: 2, tenantKey: TEST_TENANT_KEY, ...PIPELINED })
    const watcher = new pg.Client({ connectionString: url })
    watcher.on('error', () => {})
    await watcher.connect()
    clients.push(watcher)
    try {
      let done = false
      const seen = new Set<string>()
      const watching = (async () => {
        while (!done) {
          const { rows } = await watcher.query<{ query: string }>(`select query from pg_stat_activity where usename = current_user and datname = current_database() and pid <> pg_backend_pid()`)
          for (const r of rows) seen.add(r.query)
        }
      })()
      for (let i = 0; i < 300; i++) await withTenant(app, i % 2 ? A : B, (trx) => trx.selectFrom('skills').select('id').execute())
      done = true
      await watching
      expect(seen.size).toBeGreaterThan(0)
      for (const query of seen) {
        expect(query).not.toMatch(/tenant-[ab]|[0-9a-f]{64}/)
      }
    } finally {
      await app.destroy()
    }
  })
})

/** What withTenant sends, counted on the pg clients of createDb's pool. */
function countingQueries() {
  const sent: { text: string; roundTrip: number }[] = []
  const inFlight = new Map<object, number>()
  let roundTrips = 0
  const original = pg.Client.prototype.query
  pg.Client.prototype.query = function (this: pg.Client, ...args: unknown[]) {
    // A batch (one-sync-batch.ts) sends several statements in one write.
    const batch = (args[0] as { statements?: { text: string }[] })?.statements
    const texts = batch ? batch.map((s) => s.text) : [typeof args[0] === 'string' ? args[0] : (args[0] as { text?: string })?.text ?? '']
    // A round trip starts when the client sends with nothing of its own in flight.
    const pending = inFlight.get(this) ?? 0
    if (pending === 0) roundTrips++
    inFlight.set(this, pending + 1)
    for (const text of texts) sent.push({ text, roundTrip: roundTrips })
    // A batch settles through its own callbacks, not a promise pg returns: its answer is waited for by the caller.
    if (batch) {
      inFlight.set(this, pending)
      return (original as (...a: unknown[]) => unknown).apply(this, args)
    }
    const done = () => inFlight.set(this, (inFlight.get(this) ?? 1) - 1)
    const result = (original as (...a: unknown[]) => unknown).apply(this, args)
    if (result && typeof (result as Promise<unknown>).then === 'function') (result as Promise<unknown>).then(done, done)
    return result
  } as typeof original
  return {
    sent,
    reset: () => { sent.length = 0; roundTrips = 0 },
    roundTrips: () => roundTrips,
    restore: () => { pg.Client.prototype.query = original },
  }
}

describe('withTenant\'s round trips', () => {
  const t = useTestDatabase('migrated')
  let app: Kysely<DB>
  beforeAll(async () => {
    await seedTwoTenants(t.admin)
    app = t.connectAs(inject('appRole'), 'test', 1, PIPELINED)
  })

  it('a point lookup takes 2 round trips once the connection has its challenge (6 before 0019, 3 before one Sync a batch; the classic pattern takes 4)', async () => {
    const lookup = () => withTenant(app, A, (trx) => trx.selectFrom('skills').select('id').where('slug', '=', 'lint').execute())
    await lookup()
    const counter = countingQueries()
    try {
      expect(await lookup()).toEqual([{ id: 'sA1' }])
      // Nothing was sent on the connection since the last request's clean-up: none at the start.
      expect(counter.sent.map((s) => [s.roundTrip, s.text.replace(/\s+/g, ' ').slice(0, 40)])).toEqual([
        [1, 'begin isolation level read committed rea'],
        [1, 'select tenant_context.enter($1::text, $2'],
        [1, 'select "id" from "skills" where "slug" ='],
        // Its one statement is session-safe (session-safe-statements.ts): COMMIT alone.
        [2, 'commit'],
      ])
      expect(counter.roundTrips()).toBe(2)
    } finally {
      counter.restore()
    }
  })

  it('a request with a statement that is not session-safe (written with sql) ends with the check that fn left the transaction entered and the clean-up, before COMMIT', async () => {
    await withTenant(app, A, async () => {})
    const counter = countingQueries()
    try {
      await withTenant(app, A, async (trx) => {
        await trx.selectFrom('skills').select('id').where('slug', '=', 'lint').execute()
        await sql`select id from skills where slug = ${'lint'}`.execute(trx)
        await trx.selectFrom('skills').select('id').where('slug', '=', 'lint').execute()
      })
      expect(counter.sent.at(-1)!.text).toBe('select tenant_context.finish_request(); commit')
    } finally {
      counter.restore()
    }
  })

  it('a query sent on the connection outside withTenant since the last request puts the clean-up back at the next request\'s start, behind BEGIN in the same write', async () => {
    await withTenant(app, A, async () => {})
    await sql`select 1`.execute(app)
    const counter = countingQueries()
    try {
      await withTenant(app, B, async () => {})
      expect(counter.sent.map((s) => [s.roundTrip, s.text.slice(0, 32)])).toEqual([
        [1, 'begin isolation level read commi'], [1, 'select tenant_context.clean_up()'], [1, 'select tenant_context.enter($1::'], [2, 'commit'],
      ])
    } finally {
      counter.restore()
    }
  })

  it('SQL of fn that asks for a new challenge fails its own request, and costs the next two round trips more (asked again in its transaction, then fn\'s first statement sent again), running its fn once', async () => {
    // It moves the session's mark, so its own request has no tenant at the end, and fails.
    await expect(withTenant(app, A, (trx) => sql`select tenant_context.session_challenge()`.execute(trx))).rejects.toThrow(/no tenant was entered any more/)
    let runs = 0
    const counter = countingQueries()
    try {
      expect(await withTenant(app, B, async (trx) => { runs++; return trx.selectFrom('skills').select('id').orderBy('id').execute() })).toEqual([{ id: 'sB1' }, { id: 'sB2' }])
    } finally {
      counter.restore()
    }
    expect(runs).toBe(1)
    expect(counter.sent.map((s) => s.text.replace(/ as c(, pg_catalog.pg_backend_pid\(\) as pid)?$/, ''))).toEqual([
      // The failed request above left no clean state to trust: this one cleans first. fn's first
      // statement went with the stale entry, was skipped by the server, and is sent again.
      'begin isolation level read committed read write', 'select tenant_context.clean_up()', 'select tenant_context.enter($1::text, $2::text, $3::text) as next', 'select "id" from "skills" order by "id"',
      'rollback', 'begin isolation level read committed read write', 'select tenant_context.clean_up()', 'select tenant_context.challenge()', 'select tenant_context.enter($1::text, $2::text)',
      'select "id" from "skills" order by "id"', 'commit',
    ])
  })

  // fn's first statement goes behind enter(), before enter() has answered (one round trip less).
  // A sequence's nextval() is not undone by a rollback, so it tells whether the statement ran.
  describe('fn\'s first statement, sent with the entry', () => {
    const ran = () => sql<{ n: string }>`select case when is_called then last_value else 0 end as n from public.withtenant_first_ran`.execute(t.admin).then((r) => Number(r.rows[0]!.n))
    beforeAll(async () => {
      await sql.raw(`create sequence public.withtenant_first_ran; grant usage, select on sequence public.withtenant_first_ran to ${inject('appRole')}`).execute(t.admin)
    })

    it('does not run for a tenant enter() refuses (unknown, suspended): it fails with the refusal', async () => {
      await sql`insert into tenants (id, slug, name, is_active) values ('tenant-off', 'off', 'Off', false) on conflict do nothing`.execute(t.admin)
      const before = await ran()
      for (const tenant of ['no-such-tenant', 'tenant-off']) {
        let after: unknown = 'not reached'
        await expect(withTenant(app, tenant, async (trx) => {
          await sql`select nextval('public.withtenant_first_ran')`.execute(trx).catch((error: Error) => { after = error.message; throw error })
        })).rejects.toThrow(`unknown or inactive tenant "${tenant}"`)
        expect(after).toMatch(`unknown or inactive tenant "${tenant}"`)
      }
      expect(await ran()).toBe(before)
      // The connection serves the next request.
      expect(await withTenant(app, B, (trx) => trx.selectFrom('skills').select('id').orderBy('id').execute())).toEqual([{ id: 'sB1' }, { id: 'sB2' }])
    })

    it('runs once when the entry it went with was stale and entered again, and fn runs once', async () => {
      await expect(withTenant(app, A, (trx) => sql`select tenant_context.session_challenge()`.execute(trx))).rejects.toThrow(/no tenant was entered any more/)
      const before = await ran()
      let runs = 0
      expect(await withTenant(app, B, async (trx) => {
        runs++
        const { rows } = await sql<{ n: string }>`select nextval('public.withtenant_first_ran') as n`.execute(trx)
        return { n: Number(rows[0]!.n), skills: (await trx.selectFrom('skills').select('id').orderBy('id').execute()).map((r) => r.id) }
      })).toEqual({ n: before + 1, skills: ['sB1', 'sB2'] })
      expect(runs).toBe(1)
      expect(await ran()).toBe(before + 1)
    })

    it('a failing first statement fails the request as it would alone, and the tenant stays entered for nothing after it', async () => {
      await expect(withTenant(app, A, (trx) => sql`select 1/0`.execute(trx))).rejects.toThrow(/division by zero/)
      expect(await withTenant(app, A, (trx) => trx.selectFrom('skills').select('id').orderBy('id').execute())).toEqual([{ id: 'sA1' }, { id: 'sA2' }])
    })

    it('statements fn sends together (Promise.all) each get their own answer, in one transaction', async () => {
      const [a, b, c] = await withTenant(app, A, (trx) => Promise.all([
        trx.selectFrom('skills').select('id').where('id', '=', 'sA1').execute(),
        sql<{ t: string }>`select tenant_context.current_tenant() as t`.execute(trx),
        sql<{ x: string }>`select txid_current()::text as x`.execute(trx).then(async (r) => [r.rows[0]!.x, (await sql<{ x: string }>`select txid_current()::text as x`.execute(trx)).rows[0]!.x]),
      ]))
      expect(a).toEqual([{ id: 'sA1' }])
      expect(b.rows).toEqual([{ t: A }])
      expect(c[0]).toBe(c[1])
    })

    // From an outside review: a connection object fn kept ran SQL inside the next request on the same client.
    it('a connection fn kept runs nothing once the request is over, not in the next request (another tenant\'s)', async () => {
      let kept: { executeQuery(q: CompiledQuery): Promise<unknown> } | undefined
      await withTenant(app, A, async (trx) => {
        await trx.getExecutor().provideConnection(async (connection) => { kept = connection })
        await trx.selectFrom('skills').select('id').execute()
      })
      const seen = await withTenant(app, B, async (trx) => ({
        mine: (await trx.selectFrom('skills').select('id').orderBy('id').execute()).map((r) => r.id),
        kept: await kept!.executeQuery(CompiledQuery.raw('select id from skills')).catch((error: Error) => error.message),
      }))
      expect(seen).toEqual({ mine: ['sB1', 'sB2'], kept: expect.stringMatching(/this withTenant transaction has ended/) })
    })

    // From an outside review: a batch answered at the server's error, before its ReadyForQuery, so
    // the status read after fn was the last request's ('I'): "ended", and the connection condemned.
    it('a first statement that fails, caught by fn: the request fails as aborted, and the connection serves on', async () => {
      const pid = await withTenant(app, A, async (trx) => (await sql<{ p: number }>`select pg_backend_pid() as p`.execute(trx)).rows[0]!.p)
      for (let i = 0; i < 10; i++) {
        await expect(withTenant(app, A, async (trx) => {
          await sql`select 1/0`.execute(trx).catch(() => {})
          return 'done'
        })).rejects.toThrow(/one of its statements had failed and aborted the transaction/)
      }
      expect(await withTenant(app, A, async (trx) => (await sql<{ p: number }>`select pg_backend_pid() as p`.execute(trx)).rows[0]!.p)).toBe(pid)
    })

    it('COPY … TO STDOUT as the first statement fails instead of answering no rows', async () => {
      await expect(withTenant(app, A, (trx) => sql`copy (select id from skills) to stdout`.execute(trx))).rejects.toThrow(/COPY … TO STDOUT is not available/)
      expect(await withTenant(app, A, (trx) => trx.selectFrom('skills').select('id').orderBy('id').execute())).toEqual([{ id: 'sA1' }, { id: 'sA2' }])
    })

    it('fn that sends nothing before an await of its own still runs in the entered transaction', async () => {
      expect(await withTenant(app, A, async (trx) => {
        await new Promise((r) => setTimeout(r, 20))
        return (await trx.selectFrom('skills').select('id').orderBy('id').execute()).map((r) => r.id)
      })).toEqual(['sA1', 'sA2'])
      await expect(withTenant(app, 'no-such-tenant', async () => { await new Promise((r) => setTimeout(r, 5)) })).rejects.toThrow(/unknown or inactive tenant/)
    })
  })

  // A request ends with COMMIT alone only when all its statements were session-safe
  // (session-safe-statements.ts). An outside review beat a first version (8f72ed9, reverted) with
  // the three below: a builder statement can carry SQL (explain's format is written into the text
  // as given), a CompiledQuery's text need not be its query, and a builder statement can call a
  // function. Each fails on 8f72ed9.
  it('what a builder statement that carries SQL leaves on the session (explain\'s format) does not reach the next request, nor does its COMMIT pass', async () => {
    const carried = "text) select 1; set app.leak = 'from-A'; select pg_catalog.pg_advisory_lock(4242); declare c cursor with hold for select id, tenant_id from skills; prepare p as select id from skills; explain (format text"
    await withTenant(app, A, async (trx) => { await trx.selectFrom('skills').select('id').explain(carried as never) })
    expect(await withTenant(app, B, async (trx) => (await sql<{ leak: string; locks: number; cursors: number; prepared: number }>`select current_setting('app.leak', true) as leak,
      (select count(*)::int from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()) as locks,
      (select count(*)::int from pg_cursors where name = 'c') as cursors, (select count(*)::int from pg_prepared_statements) as prepared`.execute(trx)).rows[0])).toEqual({ leak: '', locks: 0, cursors: 0, prepared: 0 })
    await expect(withTenant(app, A, async (trx) => {
      await trx.selectFrom('skills').select('id').explain('text) select 1; commit; begin; explain (format text' as never)
    })).rejects.toThrow(/no tenant was entered any more/)
  })

  it('what a CompiledQuery whose text is not its query leaves on the session does not reach the next request', async () => {
    await withTenant(app, A, async (trx) => {
      const compiled = trx.selectFrom('skills').select('id').compile()
      await trx.executeQuery({ ...compiled, sql: `select pg_catalog.set_config('app.leak', 'forged', false)` })
    })
    expect(await withTenant(app, B, async (trx) => (await sql<{ leak: string }>`select current_setting('app.leak', true) as leak`.execute(trx)).rows[0]!.leak)).toBe('')
  })

  // A builder statement's function call could change the session (set_config, an advisory lock).
  it('what a function called from a builder statement leaves on the session does not reach the next request', async () => {
    await withTenant(app, A, async (trx) => {
      await trx.selectFrom('skills').select((eb) => [eb.fn<string>('set_config', [eb.val('app.leak'), eb.val('left'), eb.val(false)]).as('s'), eb.fn<string>('pg_advisory_lock', [eb.val(4343)]).as('l')]).limit(1).execute()
    })
    expect(await withTenant(app, B, async (trx) => (await sql<{ leak: string; locks: number }>`select current_setting('app.leak', true) as leak,
      (select count(*)::int from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()) as locks`.execute(trx)).rows[0])).toEqual({ leak: '', locks: 0 })
  })

  it('nothing fn leaves on the session reaches the next request: settings, plans, cursors, LISTEN, advisory locks', async () => {
    await withTenant(app, A, async (trx) => {
      await sql`set search_path = pg_catalog`.execute(trx)
      await sql`set statement_timeout = 1234`.execute(trx)
      await sql`prepare carried as select id from public.skills`.execute(trx)
      await sql`declare kept cursor with hold for select id from public.skills`.execute(trx)
      await sql`listen carried`.execute(trx)
      await sql`select pg_advisory_lock(4242)`.execute(trx)
    })
    const left = await withTenant(app, B, async (trx) => ({
      searchPath: (await sql<{ s: string }>`select current_setting('search_path') as s`.execute(trx)).rows[0]!.s,
      timeout: (await sql<{ s: string }>`select current_setting('statement_timeout') as s`.execute(trx)).rows[0]!.s,
      prepared: (await sql<{ n: number }>`select count(*)::int as n from pg_prepared_statements`.execute(trx)).rows[0]!.n,
      cursors: (await sql<{ n: number }>`select count(*)::int as n from pg_cursors`.execute(trx)).rows[0]!.n,
      listening: (await sql<{ n: number }>`select count(*)::int as n from pg_listening_channels()`.execute(trx)).rows[0]!.n,
      locks: (await sql<{ n: number }>`select count(*)::int as n from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()`.execute(trx)).rows[0]!.n,
      skills: (await trx.selectFrom('skills').select('id').orderBy('id').execute()).map((r) => r.id),
    }))
    expect(left).toEqual({ searchPath: '"$user", public', timeout: '0', prepared: 0, cursors: 0, listening: 0, locks: 0, skills: ['sB1', 'sB2'] })
  })

  // From an outside review: SQL in fn that ends the transaction made withTenant report success
  // for a write that was rolled back, or fail after a write that was committed.
  it.each([
    ['ROLLBACK', 'rollback', 'Lint'],
    ['COMMIT', 'commit', 'ended early'],
  ])('SQL in fn that runs %s fails the request, whatever it did to the write before it', async (_label, statement, after) => {
    await expect(withTenant(app, A, async (trx) => {
      await trx.updateTable('skills').set({ name: 'ended early' }).where('id', '=', 'sA1').execute()
      await sql.raw(statement).execute(trx)
      return 'ok'
    })).rejects.toThrow(/withTenant: (SQL in fn ended the transaction|no tenant was entered any more)/)
    expect((await sql<{ name: string }>`select name from skills where id = 'sA1'`.execute(t.admin)).rows[0]!.name).toBe(after)
    await sql`update skills set name = 'Lint' where id = 'sA1'`.execute(t.admin)
    expect(await withTenant(app, B, (trx) => trx.selectFrom('skills').select('id').orderBy('id').execute())).toEqual([{ id: 'sB1' }, { id: 'sB2' }])
  })

  // 0021's end reads the mark itself: SQL that made the session forget it gets currval's error there.
  it('SQL in fn that discards the session\'s sequences (the mark) fails the request at its end, and the next one enters', async () => {
    await expect(withTenant(app, A, async (trx) => {
      await sql`discard sequences`.execute(trx)
      return 'ok'
    })).rejects.toThrow(/no tenant was entered any more/)
    expect(await withTenant(app, B, (trx) => trx.selectFrom('skills').select('id').orderBy('id').execute())).toEqual([{ id: 'sB1' }, { id: 'sB2' }])
  })

  // From a second outside review: each of these reached the next request, or made withTenant
  // report a request of which nothing was committed.
  it('queries fn started and did not wait for run inside its transaction, before its clean-up: none reaches the next request', async () => {
    await withTenant(app, A, async () => {})
    let third: unknown
    await withTenant(app, A, async (trx) => {
      void sql`select pg_sleep(0.2)`.execute(trx).catch(() => {})
      void sql`select set_config('app.leak', 'from-A', false)`.execute(trx).catch(() => {})
      sql<{ id: string }>`select id from skills order by id`.execute(trx).then((r) => { third = r.rows }, (e) => { third = String(e) })
    })
    expect(third).toEqual([{ id: 'sA1' }, { id: 'sA2' }])
    expect(await withTenant(app, B, async (trx) => (await sql<{ leak: string | null }>`select current_setting('app.leak', true) as leak`.execute(trx)).rows[0]!.leak)).toBe('')
    // And a query started after fn returned is refused.
    let kept: Parameters<Parameters<typeof withTenant>[2]>[0] | undefined
    await withTenant(app, A, async (trx) => { kept = trx })
    await expect(kept!.selectFrom('skills').select('id').execute()).rejects.toThrow(/this withTenant transaction has ended/)
  })

  it.each([
    ['ROLLBACK; BEGIN in one statement', (trx: Transaction<DB>) => sql.raw('rollback; begin').execute(trx)],
    ['COMMIT; BEGIN in one statement', (trx: Transaction<DB>) => sql.raw('commit; begin').execute(trx)],
    ['a ROLLBACK it did not wait for', async (trx: Transaction<DB>) => void sql`rollback`.execute(trx).catch(() => {})],
  ])('SQL in fn that ends the transaction by %s fails the request', async (_label, end) => {
    const before = (await sql<{ n: number }>`select count(*)::int as n from usage_events`.execute(t.admin)).rows[0]!.n
    await expect(withTenant(app, A, async (trx) => {
      await trx.insertInto('usage_events').values({ id: `ended-${_label.replace(/\W/g, '')}`, tool_name: 'cli', skill_id: 'sA1', user_id: 'uA1' }).execute()
      await end(trx)
      return 'ok'
    })).rejects.toThrow(/withTenant: (SQL in fn ended the transaction|no tenant was entered any more)/)
    const after = (await sql<{ n: number }>`select count(*)::int as n from usage_events`.execute(t.admin)).rows[0]!.n
    expect(after - before).toBe(_label.startsWith('COMMIT') ? 1 : 0)
  })

  it('what SQL sent on a new connection before its first request left (a setting, a lock, a prepared statement, a read-only default) is gone when it enters', async () => {
    const fresh = t.connectAs(inject('appRole'), 'test', 1, PIPELINED)
    await sql`select set_config('app.leak', 'outside', false), pg_advisory_lock(42), set_config('default_transaction_read_only', 'on', false)`.execute(fresh)
    await sql`prepare p as select 1`.execute(fresh)
    expect(await withTenant(fresh, B, async (trx) => (await sql<{ leak: string; prepared: number; locks: number }>`select current_setting('app.leak', true) as leak,
      (select count(*)::int from pg_prepared_statements) as prepared,
      (select count(*)::int from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()) as locks`.execute(trx)).rows[0])).toEqual({ leak: '', prepared: 0, locks: 0 })
    await fresh.destroy()
  })

  it('what SQL outside withTenant left on a session (a read-only default, a setting of its own) is gone before the next request enters', async () => {
    await sql`select set_config('app.leak', 'left', false), set_config('default_transaction_read_only', 'on', false), set_config('statement_timeout', '123456', false)`.execute(app)
    expect(await withTenant(app, B, async (trx) => {
      await trx.updateTable('skills').set({ name: 'Lint' }).where('id', '=', 'sB1').execute()
      return (await sql<{ leak: string | null }>`select current_setting('app.leak', true) as leak`.execute(trx)).rows[0]!.leak
    })).toBe('')
  })

  it('a Kysely instance not made by createDb still gets a tenant-scoped transaction, one statement at a time', async () => {
    const u = new URL(t.url)
    u.username = inject('appRole')
    u.password = 'test'
    const pool = new pg.Pool({ connectionString: u.toString(), max: 1 })
    pool.on('error', () => {})
    const elsewhere = new Kysely<DB>({ dialect: new PostgresDialect({ pool }) })
    try {
      expect(await withTenant(elsewhere, B, (trx) => trx.selectFrom('skills').select('id').orderBy('id').execute())).toEqual([{ id: 'sB1' }, { id: 'sB2' }])
    } finally {
      await elsewhere.destroy()
    }
  })
})

describe('the pool under withTenant', () => {
  const t = useTestDatabase('migrated')
  let url: string
  beforeAll(async () => {
    await seedTwoTenants(t.admin)
    const u = new URL(t.url)
    u.username = inject('appRole')
    u.password = 'test'
    url = u.toString()
  })

  const sessionsOf = async (applicationName: string) => (await sql<{ state: string; n: number }>`
    select state, count(*)::int as n from pg_stat_activity where application_name = ${applicationName} group by state order by state`.execute(t.admin)).rows

  it('a flood of 1,000 requests that throw inside fn leaves the pool as it was: as many sessions, none idle in transaction', async () => {
    const app = createDb<DB>(url, { max: 10, applicationName: 'flood-test', tenantKey: TEST_TENANT_KEY, ...PIPELINED })
    try {
      await Promise.all(Array.from({ length: 10 }, () => withTenant(app, A, (trx) => sql`select pg_sleep(0.05)`.execute(trx))))
      const before = await sessionsOf('flood-test')
      expect(before).toEqual([{ state: 'idle', n: 10 }])
      const outcomes = await Promise.allSettled(Array.from({ length: 1000 }, (_, i) => withTenant(app, i % 2 ? A : B, async (trx) => {
        if (i % 3 === 0) await sql`select 1/0`.execute(trx)
        else if (i % 3 === 1) await trx.selectFrom('skills').select('id').execute()
        throw new Error(`request ${i} failed`)
      })))
      expect(outcomes.every((o) => o.status === 'rejected')).toBe(true)
      expect(await sessionsOf('flood-test')).toEqual(before)
      expect(await withTenant(app, B, (trx) => trx.selectFrom('skills').select('id').orderBy('id').execute())).toEqual([{ id: 'sB1' }, { id: 'sB2' }])
    } finally {
      await app.destroy()
    }
  })

  it('32 callers on a pool of 10, some requests killing their own session: the others are served, none waits on a dead session', async () => {
    const app = createDb<DB>(url, { max: 10, applicationName: 'condemn-test', tenantKey: TEST_TENANT_KEY, ...PIPELINED })
    try {
      const started = performance.now()
      const outcomes = await Promise.allSettled(Array.from({ length: 32 * 20 }, (_, i) => withTenant(app, i % 2 ? A : B, async (trx) => {
        // Ends the session under the request: its clean-up fails, and the pool must drop it.
        if (i % 16 === 5) await sql`select pg_terminate_backend(pg_backend_pid())`.execute(trx)
        return (await trx.selectFrom('skills').select('tenant_id').execute()).map((r) => r.tenant_id)
      })))
      const elapsed = performance.now() - started
      outcomes.forEach((o, i) => {
        if (i % 16 === 5) expect(o.status).toBe('rejected')
        else expect(o).toEqual({ status: 'fulfilled', value: [i % 2 ? A : B, i % 2 ? A : B] })
      })
      // Far under the pool's 10 s connection timeout: a request handed a dead session would fail or wait.
      expect(elapsed).toBeLessThan(10_000)
      const after = await sessionsOf('condemn-test')
      expect(after.filter((s) => s.state !== 'idle')).toEqual([])
      expect(after.reduce((n, s) => n + s.n, 0)).toBeLessThanOrEqual(10)
    } finally {
      await app.destroy()
    }
  })
})

describe('withTenant on a database before 0019 (the app deployed before its migration ran)', () => {
  const t = useTestDatabase('migrated')
  beforeAll(async () => {
    await seedTwoTenants(t.admin)
    await sql`drop function tenant_context.session_challenge(); drop function tenant_context.enter(text, text, text); drop function tenant_context.clean_up()`.execute(t.admin)
  })

  it('asks for the challenge per transaction and cleans up with the commands themselves', async () => {
    const app = t.connectAs(inject('appRole'), 'test', 1, PIPELINED)
    await withTenant(app, A, (trx) => sql`set search_path = pg_catalog`.execute(trx))
    const counter = countingQueries()
    try {
      expect(await withTenant(app, B, async (trx) => ({
        skills: (await trx.selectFrom('skills').select('id').orderBy('id').execute()).map((r) => r.id),
        searchPath: (await sql<{ s: string }>`select current_setting('search_path') as s`.execute(trx)).rows[0]!.s,
      }))).toEqual({ skills: ['sB1', 'sB2'], searchPath: '"$user", public' })
    } finally {
      counter.restore()
    }
    expect(counter.sent.map((s) => s.text.slice(0, 34))).toEqual(['begin isolation level read committe', 'reset all', 'close all', 'deallocate all', 'discard temp', 'unlisten *',
      'select pg_catalog.pg_advisory_unloc', 'select tenant_context.challenge() ', 'select tenant_context.enter($1::te', 'select "id" from "skills" order by', 'select current_setting(\'search_pat',
      'reset all; close all; deallocate a'].map((s) => s.slice(0, 34)))
  })
})
