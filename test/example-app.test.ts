import { request } from 'node:http'
import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { startMarketplace, type Marketplace } from '../examples/marketplace/app.ts'
import { verifyAuditTrail } from '../src/audit/verify-audit.ts'
import { asSuperuser, useTestDatabase } from './support/database.ts'
import { TEST_AUDIT_KEY, TEST_TENANT_KEY } from './support/tenant-key.ts'

interface Reply {
  status: number
  body: any
}

// The example app (examples/marketplace/) driven over HTTP, as the app role. t.admin is never used:
// its pool would keep a superuser session connected, and sign-up (createTenant) is refused beside
// one (0005's guard); asSuperuser's connection closes at once.
describe('the example marketplace over HTTP: two tenants, neither sees the other', () => {
  const t = useTestDatabase('migrated')
  let app: Marketplace
  const call = async (method: string, path: string, { body, key }: { body?: unknown; key?: string } = {}): Promise<Reply> => {
    const res = await fetch(`${app.url}${path}`, {
      method,
      headers: { 'content-type': 'application/json', ...(key ? { authorization: `Bearer ${key}` } : {}) },
      ...(body === undefined ? {} : { body: typeof body === 'string' ? body : JSON.stringify(body) }),
    })
    return { status: res.status, body: await res.json() }
  }
  const a = { slug: 'acme', key: '', tenantId: '' }
  const b = { slug: 'bolt', key: '', tenantId: '' }

  beforeAll(async () => {
    const url = new URL(t.url)
    url.username = inject('appRole')
    url.password = 'test'
    app = await startMarketplace({ databaseUrl: url.toString(), port: 0, tenantKey: TEST_TENANT_KEY, auditKey: TEST_AUDIT_KEY })
  })
  // Hooks after run in reverse: the app closes its pool before the database is dropped.
  afterAll(async () => app?.close())

  it('sign-up makes a tenant and its first admin, and answers the admin\'s API key; a taken slug is 409', async () => {
    for (const [tenant, name, email] of [[a, 'Acme', 'ann@acme.example'], [b, 'Bolt', 'bob@bolt.example']] as const) {
      const reply = await call('POST', '/signup', { body: { name, slug: tenant.slug, email } })
      expect(reply.status, JSON.stringify(reply.body)).toBe(201)
      expect(reply.body).toEqual({ tenantId: expect.any(String), slug: tenant.slug, apiKey: expect.stringMatching(/^sk_[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/) })
      Object.assign(tenant, { key: reply.body.apiKey, tenantId: reply.body.tenantId })
    }
    expect(await call('POST', '/signup', { body: { name: 'Acme again', slug: 'acme', email: 'eve@x.example' } }))
      .toEqual({ status: 409, body: { error: 'the slug "acme" is taken: choose another' } })
  })

  it('each tenant adds skills and lists only its own (the same skill name in both is no conflict)', async () => {
    for (const [tenant, names] of [[a, ['Code review', 'Shared name']], [b, ['Bug triage', 'Shared name']]] as const) {
      for (const name of names) expect((await call('POST', `/t/${tenant.slug}/skills`, { key: tenant.key, body: { name } })).status).toBe(201)
    }
    const listed = async (tenant: typeof a) => {
      const reply = await call('GET', `/t/${tenant.slug}/skills`, { key: tenant.key })
      expect(reply.status).toBe(200)
      return (reply.body.skills as { name: string }[]).map((s) => s.name)
    }
    expect(await listed(a)).toEqual(['Code review', 'Shared name'])
    expect(await listed(b)).toEqual(['Bug triage', 'Shared name'])
  })

  it('a key on the other tenant\'s URL is refused both ways; no key, a made-up key, an unknown slug too', async () => {
    const refused = { status: 403, body: { error: expect.stringMatching(/^this API key is not for \/t\//) } }
    expect(await call('GET', `/t/${b.slug}/skills`, { key: a.key })).toEqual(refused)
    expect(await call('GET', `/t/${a.slug}/skills`, { key: b.key })).toEqual(refused)
    expect(await call('POST', `/t/${b.slug}/skills`, { key: a.key, body: { name: 'Planted' } })).toEqual(refused)
    expect((await call('GET', `/t/${a.slug}/skills`)).status).toBe(401)
    // A key that names A's tenant but was never issued: looked up in A, found nowhere.
    const madeUp = `${a.key.slice(0, a.key.indexOf('.'))}.notAKeyThatWasIssued`
    expect(await call('GET', `/t/${a.slug}/skills`, { key: madeUp })).toEqual({ status: 401, body: { error: 'unknown, revoked or expired API key' } })
    expect(await call('GET', '/t/nobody/skills', { key: a.key })).toEqual({ status: 404, body: { error: 'no tenant at /t/nobody' } })
    // B never gained the planted skill.
    expect((await call('GET', `/t/${b.slug}/skills`, { key: b.key })).body.skills).toHaveLength(2)
  })

  it('a rating is written with its audit row, in the tenant\'s chain, signed; another tenant\'s skill is not found', async () => {
    const [skill] = (await call('GET', `/t/${a.slug}/skills`, { key: a.key })).body.skills as { id: string }[]
    expect(await call('POST', `/t/${a.slug}/skills/${skill!.id}/ratings`, { key: a.key, body: { rating: 4 } }))
      .toEqual({ status: 201, body: { skillId: skill!.id, rating: 4, averageRating: 4 } })
    expect((await call('GET', `/t/${a.slug}/skills`, { key: a.key })).body.skills[0].average_rating).toBe(4)
    // A's skill through B's URL and key: row security hides it from B's transaction.
    expect((await call('POST', `/t/${b.slug}/skills/${skill!.id}/ratings`, { key: b.key, body: { rating: 1 } })).status).toBe(404)
    expect((await call('POST', `/t/${a.slug}/skills/${skill!.id}/ratings`, { key: a.key, body: { rating: 9 } })).status).toBe(400)

    const { report, rows } = await asSuperuser(t.url, async (db) => ({
      report: await verifyAuditTrail(db, { keys: [TEST_AUDIT_KEY] }),
      rows: (await sql<{ tenant_id: string; action: string; resource_id: string | null }>`
        select tenant_id, action, resource_id from audit_logs where tenant_id in (${a.tenantId}, ${b.tenantId}) order by tenant_id = ${b.tenantId}, seq`.execute(db)).rows,
    }))
    expect(report.problems).toEqual([])
    expect(rows).toEqual([
      { tenant_id: a.tenantId, action: 'tenant.signup', resource_id: null },
      { tenant_id: a.tenantId, action: 'skill.rate', resource_id: skill!.id },
      { tenant_id: b.tenantId, action: 'tenant.signup', resource_id: null },
    ])
  })

  it('from an outside review: a character cut between two TCP chunks is stored whole; a NUL in the slug is 404 and in a field 400, not 500; ten first ratings at once by one user are all answered 201', async () => {
    const body = Buffer.from(JSON.stringify({ name: 'Split name', description: 'café ünïcode 漢字' }), 'utf8')
    const cut = body.indexOf(Buffer.from('é', 'utf8')) + 1
    const answer = await new Promise<Reply>((resolve, reject) => {
      const req = request(`${app.url}/t/${a.slug}/skills`, { method: 'POST', headers: { 'content-type': 'application/json', 'content-length': body.length, authorization: `Bearer ${a.key}` } }, (res) => {
        const chunks: Buffer[] = []
        res.on('data', (c) => chunks.push(c))
        res.on('end', () => resolve({ status: res.statusCode!, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) }))
      })
      req.on('error', reject)
      req.write(body.subarray(0, cut))
      setTimeout(() => req.end(body.subarray(cut)), 200)
    })
    expect(answer.status).toBe(201)
    const listed = (await call('GET', `/t/${a.slug}/skills`, { key: a.key })).body.skills as { id: string; description: string }[]
    expect(listed.find((x) => x.id === answer.body.id)?.description).toBe('café ünïcode 漢字')

    expect((await call('GET', `/t/${a.slug}%00/skills`, { key: a.key })).status).toBe(404)
    for (const name of ['a\u0000b', 'lone \ud800 x']) expect((await call('POST', `/t/${a.slug}/skills`, { key: a.key, body: { name } })).status, JSON.stringify(name)).toBe(400)
    const rated = await Promise.all(Array.from({ length: 10 }, (_, i) => call('POST', `/t/${a.slug}/skills/${answer.body.id}/ratings`, { key: a.key, body: { rating: 1 + (i % 5) } })))
    expect(rated.map((r) => r.status)).toEqual(Array(10).fill(201))
  })

  it('without an audit key the app does not start (a sign-up would commit its tenant, then fail to issue its key)', async () => {
    const saved = process.env.SKILLS_DB_AUDIT_KEY
    delete process.env.SKILLS_DB_AUDIT_KEY
    try {
      await expect(startMarketplace({ databaseUrl: t.url, port: 0, tenantKey: TEST_TENANT_KEY })).rejects.toThrow('the marketplace signs with the tenant key and the audit key: pass them, or set SKILLS_DB_AUDIT_KEY')
    } finally {
      process.env.SKILLS_DB_AUDIT_KEY = saved
    }
  })

  it('bad JSON, a wrong field and an unknown route get a status and a one-line { error }, never a stack', async () => {
    const bad = await call('POST', '/signup', { body: '{"name": "Acme",' })
    expect(bad.status).toBe(400)
    expect(bad.body).toEqual({ error: expect.stringMatching(/^the body is not JSON \(.*\): send e\.g\. \{"name":"Acme"\}$/) })
    expect(await call('POST', '/signup', { body: { name: 'X', slug: 'Not A Slug', email: 'x@x.example' } }))
      .toEqual({ status: 400, body: { error: 'slug "Not A Slug" is not 1 to 63 lowercase letters, digits and hyphens, with no hyphen first or last' } })
    expect(await call('POST', '/signup', { body: { name: 'X', slug: 'x' } })).toEqual({ status: 400, body: { error: '"email" is missing from the body' } })
    expect((await call('DELETE', `/t/${a.slug}/skills`, { key: a.key })).status).toBe(405)
    expect((await call('GET', '/nowhere')).status).toBe(404)
    expect(JSON.stringify(bad.body)).not.toMatch(/\n|\bat .*\.ts:\d+/)
  })
})
