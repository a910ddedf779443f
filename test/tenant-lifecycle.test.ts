import { createHmac } from 'node:crypto'
import { Readable, Writable } from 'node:stream'
import { sql, type Kysely } from 'kysely'
import { beforeAll, describe, expect, inject, it } from 'vitest'
import { recordAudit } from '../src/audit/record-audit.ts'
import { verifyAuditTrail } from '../src/audit/verify-audit.ts'
import type { DB } from '../src/db-types.ts'
import { deleteTenant } from '../src/tenant-admin/delete-tenant.ts'
import { exportTenant } from '../src/tenant-admin/export-tenant.ts'
import { importTenant } from '../src/tenant-admin/import-tenant.ts'
import { createTenant } from '../src/tenancy/create-tenant.ts'
import { lifecycleRequest } from '../src/tenancy/lifecycle-request.ts'
import { resolveApiKey } from '../src/tenancy/resolve-api-key.ts'
import { resolveTenant } from '../src/tenancy/resolve-tenant.ts'
import { TenantRequestError, TenantTakenError } from '../src/tenancy/tenant-errors.ts'
import { activateTenant, suspendTenant } from '../src/tenancy/tenant-status.ts'
import { withTenant } from '../src/tenancy/with-tenant.ts'
import { parseTenantKey } from '../src/tenancy/tenant-key.ts'
import { asSuperuser, useTestDatabase } from './support/database.ts'
import { describeIsolationMatrix } from './support/isolation-matrix.ts'
import { TEST_AUDIT_KEY, TEST_TENANT_KEY } from './support/tenant-key.ts'
import { tenantDigest } from './support/tenant-digest.ts'
import { A, B, seedRowsOfTwoTenants } from './support/tenants.ts'

const KEY = parseTenantKey(TEST_TENANT_KEY, 'test key')
const sign = (request: string, challenge: string) => `${KEY.id}:${createHmac('sha256', KEY.secret).update(`${request}:${challenge}`, 'utf8').digest('hex')}`

/** What an outcome was, so that refusals compare whole: class, message, SQLSTATE. */
async function outcome(p: Promise<unknown>): Promise<unknown> {
  try {
    return { ok: await p }
  } catch (error) {
    const e = error as Error & { code?: string; cause?: { code?: string } }
    return { name: e.name, message: e.message, code: e.code ?? e.cause?.code }
  }
}

// The tenant lifecycle from the app's own connection: the application role, no owner, no superuser.
// t.admin is never used: its pool would keep a superuser session connected, and tenants are not
// created beside one (0005's guard); asSuperuser's connection closes at once.
describe('tenants created, resolved, suspended and reactivated by the app role', () => {
  const t = useTestDatabase('migrated')
  let app: Kysely<DB>
  beforeAll(async () => {
    app = t.connectAs(inject('appRole'), 'test', 12)
    expect(await createTenant(app, { id: A, name: 'A', slug: 'a' })).toEqual({ tenantId: A, created: true })
    expect(await createTenant(app, { id: B, name: 'B', slug: 'b', domain: 'B.Example.com' })).toEqual({ tenantId: B, created: true })
    await asSuperuser(t.url, seedRowsOfTwoTenants)
  })

  describe('the isolation matrix, on two tenants createTenant made', () => {
    describeIsolationMatrix(() => app, { role: () => inject('appRole') })
  })

  it('createTenant makes the tenant and its first admin in one go; withTenant enters it at once', async () => {
    const made = await createTenant(app, { name: 'Acme Inc', slug: 'acme', plan: 'pro' }, { email: 'ann@acme.example', name: 'Ann' })
    expect(made).toMatchObject({ created: true, adminId: expect.any(String) })
    const users = await withTenant(app, made.tenantId, (trx) => trx.selectFrom('users').select(['id', 'email', 'role', 'tenant_id']).execute())
    expect(users).toEqual([{ id: made.adminId, email: 'ann@acme.example', role: 'admin', tenant_id: made.tenantId }])
    const { rows } = await asSuperuser(t.url, (admin) => sql`select name, slug, plan, is_active from tenants where id = ${made.tenantId}`.execute(admin))
    expect(rows).toEqual([{ name: 'Acme Inc', slug: 'acme', plan: 'pro', is_active: true }])
    // And the other tenants see none of it.
    expect(await withTenant(app, A, (trx) => trx.selectFrom('users').select('id').where('email', '=', 'ann@acme.example').execute())).toEqual([])
  })

  it('export, delete and import on this major (the CLI\'s own tests run on 15 and 17): every table, floats, arrays (their bounds too), jsonb (JSON null apart from SQL NULL), times and text with U+2028 come back as PostgreSQL printed them, the file the same, the audit trail verified', async () => {
    const made = await createTenant(app, { name: 'Round\u2028Trip', slug: 'round-trip', domain: 'rt.example.com' }, { email: 'r1@rt.example' })
    const R = made.tenantId
    await asSuperuser(t.url, async (db) => {
      for (const statement of [
        sql`insert into users (id, tenant_id, email, name) values ('uR2', ${R}, 'r2@rt.example', 'Zoë \u2029 "quoted" \\ back')`,
        sql`insert into skills (id, tenant_id, name, slug, description, category, content, author_id) values ('sR1', ${R}, 'Lint', 'lint', 'line\nbreak\ttab', 'dev', repeat('x', 5000), 'uR2')`,
        // An array's bounds are its own (an outside review had '[0:1]={x,y}' come back as {x,y}).
        sql`insert into skills (id, tenant_id, name, slug, description, category, content, author_id, tags) values ('sR2', ${R}, 'Fmt', 'fmt', 'd', 'dev', 'c', 'uR2', '[0:1]={x,"y z"}')`,
        sql`insert into ratings (id, tenant_id, skill_id, user_id, rating) values ('rR1', ${R}, 'sR1', 'uR2', 5)`,
        sql`insert into usage_events (id, tenant_id, tool_name, skill_id, user_id, metadata, created_at) values ('eR1', ${R}, 'cli', 'sR1', 'uR2', '{"n": 1.5e-7, "big": 12345678901234567890, "nested": {"a": [1, null, "\u2028"]}}', '2026-01-02 03:04:05.123456+00')`,
        sql`insert into skill_versions (id, tenant_id, skill_id, version, content_url, content_hash, content_type, name, description, created_by) values ('vR1', ${R}, 'sR1', 1, 'u', 'h', 't', 'n', 'd', 'uR2')`,
        sql`insert into skill_embeddings (id, tenant_id, skill_id, embedding, model_name, model_version, input_hash) values ('mR1', ${R}, 'sR1', '{0.1, -0, 1e-30, 3.4028235e38}', 'm', '1', 'i')`,
        sql`insert into skill_reviews (id, tenant_id, skill_id, requested_by, categories, summary, reviewed_content_hash, model_name) values ('wR1', ${R}, 'sR1', 'uR2', '["a", "b"]', 's', 'h', 'm')`,
        // JSON null is not SQL NULL: an export of version 1 wrote both as null, and this NOT NULL
        // column refused the import (an outside review); in a nullable one it came back as NULL.
        sql`insert into skill_reviews (id, tenant_id, skill_id, requested_by, categories, summary, reviewed_content_hash, model_name) values ('wR2', ${R}, 'sR2', 'uR2', 'null', 's', 'h', 'm')`,
        sql`insert into usage_events (id, tenant_id, tool_name, skill_id, user_id, metadata) values ('eR2', ${R}, 'cli', 'sR1', 'uR2', 'null'), ('eR3', ${R}, 'cli', 'sR1', 'uR2', null), ('eR4', ${R}, 'cli', 'sR1', 'uR2', '"null"')`,
        sql`insert into api_keys (id, tenant_id, user_id, key_hash, key_prefix, name, expires_at) values ('kR1', ${R}, 'uR2', 'hash-r', 'sk_r', 'r', now() + interval '1 day')`,
        sql`insert into site_settings (id, tenant_id, ollama_model) values ('default', ${R}, 'model-r')`,
      ]) await statement.execute(db)
    })
    await withTenant(app, R, (trx) => recordAudit(trx, { actorId: 'uR2', action: 'skill.create', resourceId: 'sR1' }))
    const before = await tenantDigest(t.url, R)
    const exported = async () => {
      const chunks: Buffer[] = []
      await asSuperuser(t.url, (db) => exportTenant(db, R, new Writable({ write(chunk, _e, done) { chunks.push(Buffer.from(chunk)); done() } })))
      return Buffer.concat(chunks).toString('utf8')
    }
    const file = await exported()
    expect(await suspendTenant(app, R)).toBe('suspended')
    await asSuperuser(t.url, (db) => deleteTenant(db, R))
    expect(Object.values(await tenantDigest(t.url, R)).every((d) => d.startsWith('0:'))).toBe(true)
    // Opened twice (the seal checked first), as the CLI does.
    await asSuperuser(t.url, (db) => importTenant(db, () => Readable.from([file]), { allowUnconfinedSessions: true }))
    expect(await tenantDigest(t.url, R)).toEqual(before)
    expect(Object.values(before).every((d) => !d.startsWith('0:'))).toBe(true)
    expect(await exported()).toBe(file)
    expect((await asSuperuser(t.url, (db) => verifyAuditTrail(db, { keys: [TEST_AUDIT_KEY], tenantId: R }))).problems).toEqual([])
  })

  it('columns an app adds come back too: a date[] written under another DateStyle than it is read with, and with NULL elements read with array_nulls off, a composite holding an array with bounds and a JSON null, a generated column, an identity column, a regclass read under another search_path (outside reviews had each change, or the import fail)', async () => {
    const O = (await createTenant(app, { name: 'Odd', slug: 'odd-columns' })).tenantId
    const setting = (name: string, value: string) => asSuperuser(t.url, (db) => sql.raw(`do $$ begin execute format('alter database %I set ${name} = %L', current_database(), '${value}'); end $$`).execute(db))
    const dateStyle = (style: string) => setting('datestyle', style)
    await asSuperuser(t.url, async (db) => {
      await sql`create type zz_pair as (a int, b text[], c jsonb)`.execute(db)
      // Statistics off: the side-channel guard (0015) refuses a column the app role could estimate through.
      // And a generated column, which the database computes again (an outside review could not import a tenant back).
      await sql`alter table usage_events add column zz_days date[], add column zz_pair zz_pair, add column zz_twice int generated always as (length(tool_name) * 2) stored, add column zz_rel regclass, add column zz_ident bigint generated always as identity`.execute(db)
      await sql`alter table usage_events alter zz_days set statistics 0, alter zz_pair set statistics 0, alter zz_twice set statistics 0, alter zz_rel set statistics 0, alter zz_ident set statistics 0`.execute(db)
      await sql`insert into usage_events (id, tenant_id, tool_name, zz_days, zz_pair, zz_rel) values
        ('eO1', ${O}, 'cli', '{2024-02-01,NULL,2024-12-31}', '(1,"[0:2]={x,NULL,\\"NULL\\"}",null)', 'public.usage_events'), ('eO2', ${O}, 'cli', null, row(2, '{}', 'null'::jsonb), null)`.execute(db)
      // A table of the same name earlier on the search_path the import's database sets (below).
      await sql`create schema zz_other`.execute(db)
      await sql`create table zz_other.usage_events (x int)`.execute(db)
    })
    const before = await tenantDigest(t.url, O)
    const exported = async () => {
      const chunks: Buffer[] = []
      await asSuperuser(t.url, (db) => exportTenant(db, O, new Writable({ write(chunk, _e, done) { chunks.push(Buffer.from(chunk)); done() } })))
      return Buffer.concat(chunks).toString('utf8')
    }
    await dateStyle('SQL, DMY')
    let file: string
    try {
      file = await exported()
    } finally {
      await dateStyle('ISO, MDY')
    }
    expect(file).toContain('"zz_days":"{2024-02-01,NULL,2024-12-31}"')
    expect(await suspendTenant(app, O)).toBe('suspended')
    await asSuperuser(t.url, (db) => deleteTenant(db, O))
    // Read where an array's NULL would be the text 'NULL' (array_nulls off).
    await setting('array_nulls', 'off')
    await setting('search_path', 'zz_other, public')
    try {
      await asSuperuser(t.url, (db) => importTenant(db, Readable.from([file]), { allowUnconfinedSessions: true }))
    } finally {
      await setting('array_nulls', 'on')
      await asSuperuser(t.url, (db) => sql.raw(`do $$ begin execute format('alter database %I reset search_path', current_database()); end $$`).execute(db))
    }
    const { rows: rel } = await asSuperuser(t.url, (db) => sql<{ same: boolean }>`select zz_rel = 'public.usage_events'::regclass as same from usage_events where id = 'eO1'`.execute(db))
    expect(rel).toEqual([{ same: true }])
    // An identity column: its values as exported, and its sequence past them (the next row does not collide).
    const { rows: next } = await asSuperuser(t.url, (db) => sql<{ fresh: boolean }>`with added as (insert into usage_events (tenant_id, tool_name) values (${A}, 'after') returning zz_ident)
      select (select zz_ident from added) > all (select zz_ident from usage_events where tenant_id = ${O}) as fresh`.execute(db))
    expect(next).toEqual([{ fresh: true }])
    expect(await tenantDigest(t.url, O)).toEqual(before)
    expect(await exported()).toBe(file)
  })

  it('resolveTenant: a slug or a domain (any case) to the id and active flag; nothing for an unknown one', async () => {
    expect(await resolveTenant(app, { slug: 'a' })).toEqual({ tenantId: A, active: true })
    expect(await resolveTenant(app, { domain: 'b.example.COM' })).toEqual({ tenantId: B, active: true })
    expect(await resolveTenant(app, { slug: 'nobody' })).toBeUndefined()
    expect(await resolveTenant(app, { domain: 'nobody.example.com' })).toBeUndefined()
    await expect(resolveTenant(app, {} as never)).rejects.toThrow(TenantRequestError)
    await expect(resolveTenant(app, { slug: 'a', domain: 'b.example.com' } as never)).rejects.toThrow('one of them')
  })

  it('resolve_tenant is one lookup of a unique index, by slug and by domain (EXPLAIN as the owner, who runs it; no seq scan allowed)', async () => {
    const plans = await asSuperuser(t.url, (admin) => admin.transaction().execute(async (trx) => {
      await sql`set local enable_seqscan = off`.execute(trx)
      const plan = async (query: ReturnType<typeof sql>) => (await query.execute(trx)).rows.map((r: any) => r['QUERY PLAN']).join('\n')
      return [
        await plan(sql`explain select t.id, t.is_active from public.tenants t where t.slug = 'b' collate skills_db.internal`),
        await plan(sql`explain select t.id, t.is_active from public.tenants t where t.domain = 'b.example.com' collate skills_db.internal`),
      ]
    }))
    expect(plans[0]).toMatch(/^Index Scan using tenants_slug_unique_internal/)
    expect(plans[1]).toMatch(/^Index Scan using tenants_domain_unique_internal/)
  })

  it('the one answer about another tenant is "taken": the same for its slug, its domain, its id, or its id and slug together', async () => {
    const answers = await Promise.all([
      outcome(createTenant(app, { name: 'X', slug: 'a' })),
      outcome(createTenant(app, { name: 'X', slug: 'x-new-1', domain: 'b.example.com' })),
      outcome(createTenant(app, { name: 'X', slug: 'x-new-2', id: B })),
      // Knowing a tenant's id and slug is no retry of its sign-up: that needs the request key.
      outcome(createTenant(app, { name: 'A', slug: 'a', id: A })),
    ])
    expect(answers).toEqual(Array(4).fill({ name: 'TenantTakenError', message: 'the slug or domain is taken', code: '23505' }))
    const { rows } = await asSuperuser(t.url, (admin) => sql`select slug from tenants where slug like 'x-new%'`.execute(admin))
    expect(rows).toEqual([])
  })

  it('a retry of the same request (id and request key) answers created: false; another key for the same id and slug is "taken"', async () => {
    const request = { id: 'retry-tenant', name: 'Retry', slug: 'retry', requestKey: 'sign-up-form-session-123' }
    expect(await createTenant(app, request, { email: 'r@retry.example' })).toMatchObject({ tenantId: 'retry-tenant', created: true })
    expect(await createTenant(app, request, { email: 'r@retry.example' })).toEqual({ tenantId: 'retry-tenant', created: false })
    await expect(createTenant(app, { ...request, requestKey: 'someone-else-entirely' })).rejects.toThrow(TenantTakenError)
    const { rows } = await asSuperuser(t.url, (admin) => sql<{ n: number }>`select count(*)::int as n from users where tenant_id = 'retry-tenant'`.execute(admin))
    expect(rows[0]!.n).toBe(1)
  })

  it('concurrent sign-ups of one slug make one tenant; the others are told it is taken', async () => {
    const results = await Promise.all(Array.from({ length: 10 }, (_, i) =>
      outcome(createTenant(app, { name: `Racer ${i}`, slug: 'race' }, { email: `r${i}@race.example` }))))
    expect(results.filter((r) => (r as { ok?: { created: boolean } }).ok?.created === true)).toHaveLength(1)
    expect(results.filter((r) => (r as { name?: string }).name === 'TenantTakenError')).toHaveLength(9)
    const { rows } = await asSuperuser(t.url, (admin) => sql<{ n: number }>`select count(*)::int as n from users u join tenants t on t.id = u.tenant_id where t.slug = 'race'`.execute(admin))
    expect(rows[0]!.n).toBe(1)
  })

  it('concurrent retries of one request make one tenant, and every try answers its id', async () => {
    const request = { id: 'same-request', name: 'Same', slug: 'same-request', requestKey: 'one-request-key-abcdef' }
    const results = await Promise.all(Array.from({ length: 6 }, () => createTenant(app, request, { email: 'x@same.example' })))
    expect(results.filter((r) => r.created)).toHaveLength(1)
    expect(new Set(results.map((r) => r.tenantId))).toEqual(new Set(['same-request']))
  })

  it('a suspended tenant is refused by the next withTenant, on a connection that served it before, and its API keys resolve to nobody; activating brings it back', async () => {
    const made = await createTenant(app, { name: 'Sus', slug: 'sus' }, { email: 's@sus.example' })
    await withTenant(app, made.tenantId, (trx) => trx.insertInto('api_keys').values({ user_id: made.adminId!, key_hash: 'sus-hash', key_prefix: 'sk', name: 'k' }).execute())
    // Every connection of the pool has served the tenant (and kept its pipelined session challenge).
    await Promise.all(Array.from({ length: 12 }, () => withTenant(app, made.tenantId, (trx) => trx.selectFrom('skills').select('id').execute())))
    expect(await resolveApiKey(app, { tenantId: made.tenantId, keyHash: 'sus-hash' })).toEqual({ tenantId: made.tenantId, userId: made.adminId })
    expect(await suspendTenant(app, made.tenantId)).toBe('suspended')
    expect(await suspendTenant(app, made.tenantId)).toBe('unchanged')
    const refused = await Promise.all(Array.from({ length: 12 }, () => outcome(withTenant(app, made.tenantId, (trx) => trx.selectFrom('skills').select('id').execute()))))
    expect(new Set(refused.map((r) => JSON.stringify(r)))).toEqual(new Set([JSON.stringify({ name: 'TenantError', message: `unknown or inactive tenant "${made.tenantId}"`, code: '42501' })]))
    expect(await resolveApiKey(app, { tenantId: made.tenantId, keyHash: 'sus-hash' })).toBeUndefined()
    expect(await resolveTenant(app, { slug: 'sus' })).toEqual({ tenantId: made.tenantId, active: false })
    expect(await activateTenant(app, made.tenantId)).toBe('activated')
    expect(await withTenant(app, made.tenantId, (trx) => trx.selectFrom('users').select('email').execute())).toEqual([{ email: 's@sus.example' }])
    const { rows } = await asSuperuser(t.url, (admin) => sql`select event from skills_db.tenant_lifecycle where tenant_id = ${made.tenantId} order by at`.execute(admin))
    expect(rows.map((r: any) => r.event)).toEqual(['created', 'suspended', 'activated'])
  })

  it('bad input: one clear error each, and nothing created', async () => {
    const cases: [Parameters<typeof createTenant>[1], string][] = [
      [{ name: '', slug: 'ok' }, 'name has 1 to 200 characters'],
      [{ name: 'N', slug: 'Bad Slug' }, 'slug "Bad Slug" is not'],
      [{ name: 'N', slug: '-x' }, 'slug "-x" is not'],
      [{ name: 'N', slug: 'ok', domain: 'not a domain' }, 'domain "not a domain" is not a host name'],
      [{ name: 'N', slug: 'ok', plan: 'Gold Plan' }, 'plan "Gold Plan" is not'],
      [{ name: 'N', slug: 'ok', id: 'has space' }, 'tenant id "has space" is not'],
      [{ name: 'N', slug: 'ok', requestKey: 'short' }, 'requestKey has at least 16 characters'],
      // What text cannot store (an outside review had the driver's raw encoding error).
      [{ name: 'a\u0000b', slug: 'ok' }, 'holds a NUL or a lone surrogate'],
      [{ name: 'half \ud800 a pair', slug: 'ok' }, 'holds a NUL or a lone surrogate'],
    ]
    for (const [input, message] of cases) await expect(createTenant(app, input)).rejects.toThrow(message)
    await expect(createTenant(app, { name: 'N', slug: 'ok' }, { email: 'no-at-sign' })).rejects.toThrow('email "no-at-sign" is not an address')
    await expect(createTenant(app, { name: 'N', slug: 'ok' }, { email: 'a\u0000@b.example' })).rejects.toThrow(TenantRequestError)
    await expect(createTenant(app, { name: 'N', slug: 'ok' }, { email: 'a@b.example', name: 'x\u0000' })).rejects.toThrow(TenantRequestError)
    expect(await resolveTenant(app, { domain: 'a\u0000b.example.com' })).toBeUndefined()
    expect(await resolveTenant(app, { slug: 'a\udc00' })).toBeUndefined()
    await expect(suspendTenant(app, 'a\u0000')).rejects.toThrow(TenantRequestError)
    await expect(activateTenant(app, 'a\ud800')).rejects.toThrow(TenantRequestError)
    await expect(createTenant(app, { name: 'N', slug: 'ok', plan: 5 as never })).rejects.toThrow(TenantRequestError)
    await expect(createTenant(app, { name: 'N', slug: 'ok', domain: 5 as never })).rejects.toThrow(TenantRequestError)
    await expect(createTenant(app, { name: 'N', slug: 'ok', requestKey: `${'k'.repeat(16)}\ud800` })).rejects.toThrow(TenantRequestError)
    await expect(suspendTenant(app, 'no-such-tenant')).rejects.toThrow('no tenant has the id "no-such-tenant"')
    const { rows } = await asSuperuser(t.url, (admin) => sql`select 1 from tenants where slug = 'ok'`.execute(admin))
    expect(rows).toEqual([])
  })

  it('the whole lifecycle on this major beside two other tenants\' requests (the CLI\'s own load test runs on 15 and 17): none of them fails; create, write, export, suspend, delete, import: the same rows', async () => {
    const others = await Promise.all(['load-one', 'load-two'].map(async (slug) => (await createTenant(app, { name: slug, slug })).tenantId))
    let running = true
    const errors: unknown[] = []
    let served = 0
    const load = Promise.all(Array.from({ length: 4 }, async (_, i) => {
      while (running) {
        await withTenant(app, others[i % 2]!, async (trx) => {
          await trx.insertInto('usage_events').values({ tool_name: 'load' }).execute()
          return trx.selectFrom('usage_events').select('id').limit(5).execute()
        }).then(() => served++, (e) => errors.push(e))
      }
    }))
    try {
      const made = await createTenant(app, { name: 'Going', slug: 'going-api' }, { email: 'g@going.example' })
      const G = made.tenantId
      await withTenant(app, G, async (trx) => {
        for (let n = 0; n < 20; n++) {
          const skill = await trx.insertInto('skills').values({ name: `S${n}`, slug: `s-${n}`, description: 'd', category: 'c', content: 'x' }).returning('id').executeTakeFirstOrThrow()
          await trx.insertInto('ratings').values({ skill_id: skill.id, user_id: made.adminId!, rating: 3 }).execute()
          await trx.insertInto('usage_events').values({ skill_id: skill.id, tool_name: 'cli', metadata: n % 2 ? null : { n } }).execute()
          await recordAudit(trx, { actorId: made.adminId!, action: 'skill.create', resourceId: skill.id })
        }
      })
      const before = await tenantDigest(t.url, G)
      const chunks: Buffer[] = []
      await asSuperuser(t.url, (db) => exportTenant(db, G, new Writable({ write(chunk, _e, done) { chunks.push(Buffer.from(chunk)); done() } })))
      expect(await suspendTenant(app, G)).toBe('suspended')
      await expect(withTenant(app, G, (trx) => trx.selectFrom('skills').select('id').execute())).rejects.toThrow(`unknown or inactive tenant "${G}"`)
      expect((await asSuperuser(t.url, (db) => deleteTenant(db, G, { batchSize: 7 }))).rows).toMatchObject({ skills: 20, ratings: 20, usage_events: 20, audit_logs: 20, users: 1 })
      expect(Object.values(await tenantDigest(t.url, G)).every((d) => d.startsWith('0:'))).toBe(true)
      await asSuperuser(t.url, (db) => importTenant(db, Readable.from([Buffer.concat(chunks)]), { allowUnconfinedSessions: true }))
      expect(await tenantDigest(t.url, G)).toEqual(before)
    } finally {
      running = false
      await load
    }
    expect(errors).toEqual([])
    expect(served).toBeGreaterThan(10)
  })

  describe('SQL injected as the app role, without the tenant key', () => {
    /** Runs `fn` in one transaction of the app role, as injected SQL would. */
    const asInjected = <T>(fn: (trx: Kysely<DB>) => Promise<T>) => outcome(app.transaction().execute(fn))
    const createArgs = (slug: string) => ['evil-id', 'Evil', slug, null, 'freemium', null, null, null, 'h'.repeat(64)] as const
    const callCreate = (trx: Kysely<DB>, args: readonly (string | null)[], signature: string) => sql`select tenant_context.create_tenant(
      ${args[0]}::text, ${args[1]}::text, ${args[2]}::text, ${args[3]}::text, ${args[4]}::text, ${args[5]}::text, ${args[6]}::text, ${args[7]}::text, ${args[8]}::text, ${signature}::text)`.execute(trx)

    it('creates nothing with a signature of its own making, nor with a genuine one from another transaction', async () => {
      const args = createArgs('evil')
      const request = lifecycleRequest('create', [...args])
      expect(await asInjected((trx) => callCreate(trx, args, `${KEY.id}:${'0'.repeat(64)}`))).toMatchObject({ code: '42501' })
      expect(await asInjected((trx) => callCreate(trx, args, `nokey:${'0'.repeat(64)}`))).toMatchObject({ code: '42501' })
      // A signature the app made in one transaction (seen, say, in a log), replayed in the next.
      let seen = ''
      await app.transaction().execute(async (trx) => {
        const { rows } = await sql<{ c: string }>`select tenant_context.challenge() as c`.execute(trx)
        seen = sign(request, rows[0]!.c)
      })
      expect(await asInjected((trx) => callCreate(trx, args, seen))).toMatchObject({ message: 'the tenant request\'s signature is not valid for this transaction', code: '42501' })
      const { rows } = await asSuperuser(t.url, (admin) => sql`select 1 from tenants where slug = 'evil'`.execute(admin))
      expect(rows).toEqual([])
    })

    it('cannot suspend another tenant, nor reactivate one, with a replayed signature', async () => {
      let seen = ''
      await app.transaction().execute(async (trx) => {
        const { rows } = await sql<{ c: string }>`select tenant_context.challenge() as c`.execute(trx)
        seen = sign(lifecycleRequest('suspended', [B]), rows[0]!.c)
      })
      expect(await asInjected((trx) => sql`select tenant_context.set_tenant_active(${B}::text, false, ${seen}::text)`.execute(trx))).toMatchObject({ code: '42501' })
      expect(await resolveTenant(app, { slug: 'b' })).toEqual({ tenantId: B, active: true })
    })

    it('a signature for one request is no signature for another in the same transaction (the request is signed whole)', async () => {
      expect(await asInjected(async (trx) => {
        const { rows } = await sql<{ c: string }>`select tenant_context.challenge() as c`.execute(trx)
        const signedForA = sign(lifecycleRequest('suspended', [A]), rows[0]!.c)
        return sql`select tenant_context.set_tenant_active(${B}::text, false, ${signedForA}::text)`.execute(trx)
      })).toMatchObject({ code: '42501' })
    })

    it('cannot read the private lifecycle tables, delete audit rows, or import audit rows of its making', async () => {
      for (const table of ['tenant_lifecycle', 'tenant_signups', 'tenant_removals']) {
        expect(await asInjected((trx) => sql`select * from ${sql.table(`skills_db.${table}`)}`.execute(trx))).toMatchObject({ code: '42501' })
      }
      expect(await asInjected((trx) => sql`select skills_db.tenant_being_deleted(${A}::text)`.execute(trx))).toMatchObject({ code: '42501' })
      // Naming the tenant as deleted or imported in its own session settings changes nothing.
      const viaSettings = await asInjected(async (trx) => {
        await sql`select set_config('skills_db.deleting_tenant', ${A}, true), set_config('skills_db.importing_tenant', ${A}, true)`.execute(trx)
        await withTenantInside(trx)
        return sql`delete from audit_logs`.execute(trx)
      })
      expect(viaSettings).toMatchObject({ code: '42501' })
      const forged = await withTenant(app, A, async (trx) => {
        await sql`select set_config('skills_db.importing_tenant', ${A}, true)`.execute(trx)
        return (await sql<{ seq: string; row_hash: Buffer }>`insert into audit_logs (action, seq, prev_hash, row_hash)
          values ('forged', 999, '\\x00'::bytea, '\\x00'::bytea) returning seq::text, row_hash`.execute(trx)).rows[0]!
      })
      expect(forged.seq).not.toBe('999')
      expect(forged.row_hash.equals(Buffer.from([0]))).toBe(false)
    })
  })
})

/** Enters tenant A inside an open transaction (the old two-round-trip way the tests' helpers use). */
async function withTenantInside(trx: Kysely<DB>): Promise<void> {
  const { rows } = await sql<{ c: string }>`select tenant_context.challenge() as c`.execute(trx)
  const signature = `${KEY.id}:${createHmac('sha256', KEY.secret).update(`${A}:${rows[0]!.c}`, 'utf8').digest('hex')}`
  await sql`select tenant_context.enter(${A}::text, ${signature}::text)`.execute(trx)
}
