import { spawn } from 'node:child_process'
import { createHash, createHmac } from 'node:crypto'
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { Readable } from 'node:stream'
import { sql, type Kysely } from 'kysely'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { recordAudit } from '../src/audit/record-audit.ts'
import { createDb } from '../src/connection/create-db.ts'
import type { DB } from '../src/db-types.ts'
import { exportMacText } from '../src/tenant-admin/export-tenant.ts'
import { importTenant } from '../src/tenant-admin/import-tenant.ts'
import { parseTenantKey } from '../src/tenancy/tenant-key.ts'
import { createTenant } from '../src/tenancy/create-tenant.ts'
import { activateTenant, suspendTenant } from '../src/tenancy/tenant-status.ts'
import { withTenant } from '../src/tenancy/with-tenant.ts'
import { ROOT, runScript } from './support/cli.ts'
import { asSuperuser, useLegacyDatabases, type TestDatabase } from './support/database.ts'
import { TEST_AUDIT_KEY, TEST_TENANT_KEY } from './support/tenant-key.ts'
import { TENANT_DATA_TABLES as TABLES, tenantDigest } from './support/tenant-digest.ts'

const oneLine = (stderr: string) => stderr.trim().split('\n')

describe('skills-db tenant, on a fresh legacy database', () => {
  const legacy = useLegacyDatabases()
  let t: TestDatabase
  let env: Record<string, string>
  let dir: string
  let app: Kysely<DB>
  const cli = (...args: string[]) => runScript(['tenant', ...args], env)
  const json = async (...args: string[]) => {
    const r = await cli(...args, '--json')
    expect(r.stderr.split('\n').filter((l) => l.startsWith('error')), r.stderr).toEqual([])
    expect(r.code).toBe(0)
    return JSON.parse(r.stdout)
  }

  beforeAll(async () => {
    t = await legacy()
    // The legacy rows were written through this superuser pool; it must not stay connected (see asSuperuser).
    await t.admin.destroy()
    env = { DATABASE_URL: t.url, SKILLS_DB_TENANT_KEYS: TEST_TENANT_KEY, SKILLS_DB_TENANT_KEY: '', SKILLS_DB_AUDIT_KEYS: TEST_AUDIT_KEY }
    dir = mkdtempSync(path.join(tmpdir(), 'skills-db-tenant-'))
    const up = await runScript(['latest', '--no-codegen', '--app-role', inject('appRole')], env)
    expect(up.code, up.stderr).toBe(0)
    app = t.connectAs(inject('appRole'))
  })
  afterAll(() => rmSync(dir, { recursive: true, force: true }))

  it('before the open phase, every tenant command says to run skills-db open, and creates nothing', async () => {
    const r = await cli('create', '--name', 'Acme', '--slug', 'acme')
    expect(r.code).toBe(1)
    expect(oneLine(r.stderr)).toEqual(['error: this database has no tenant lifecycle yet (migration 0020_tenant_lifecycle): run skills-db open (before a second tenant), or skills-db latest on a database already opened'])
    const opened = await runScript(['open', '--no-codegen'], env)
    expect(opened.code, opened.stderr).toBe(0)
    expect((await json('list')).map((x: { slug: string }) => x.slug)).toEqual(['default'])
  })

  it('the bar: create, export, suspend (withTenant refuses), delete, import: the same rows, the same file, a verified audit trail', async () => {
    const created = await json('create', '--name', 'Acme', '--slug', 'acme', '--domain', 'acme.example.com', '--admin-email', 'ann@acme.example')
    const tenant: string = created.tenantId
    // The app at work in the new tenant: skills, ratings, usage, an API key, settings, and audit rows the app signs.
    await withTenant(app, tenant, async (trx) => {
      for (let i = 0; i < 30; i++) {
        const skill = await trx.insertInto('skills').values({ name: `S${i}`, slug: `s${i}`, description: 'd', category: 'c', content: `x${i}`, author_id: created.adminId, tags: ['a', `t${i}`] })
          .returning('id').executeTakeFirstOrThrow()
        await trx.insertInto('ratings').values({ skill_id: skill.id, user_id: created.adminId, rating: 1 + (i % 5), comment: i % 2 ? null : 'ok "quoted" \\ \n', hours_saved: i }).execute()
        await trx.insertInto('skill_embeddings').values({ skill_id: skill.id, embedding: [0.1, 1 / 3, -2.5e-7], model_name: 'm', model_version: '1', input_hash: 'h' }).execute()
        await trx.insertInto('usage_events').values({ skill_id: skill.id, user_id: created.adminId, tool_name: 'cli', metadata: { n: i, nested: { a: [1, 'ü'] } } }).execute()
        await recordAudit(trx, { actorId: created.adminId, action: 'skill.create', resourceType: 'skill', resourceId: skill.id, metadata: { i } })
      }
      await trx.insertInto('api_keys').values({ user_id: created.adminId, key_hash: 'acme-key', key_prefix: 'sk', name: 'ci' }).execute()
      await trx.insertInto('site_settings').values({ id: 'default', ollama_model: 'acme-model' }).execute()
    })
    const before = await tenantDigest(t.url, tenant)
    expect(before.audit_logs).toMatch(/^30:/)

    const file = path.join(dir, 'acme.ndjson')
    const exported = await json('export', tenant, '--out', file)
    expect(exported).toMatchObject({ tenantId: tenant, rows: 1 + 1 + 30 * 5 + 2 + 30, tables: { skills: { rows: 30 }, audit_signatures: { rows: 30 } } })
    expect(exported.peakRssMb).toBeGreaterThan(0)
    // A customer's rows: readable by the operator alone (a newcomer's export was 0644).
    expect(statSync(file).mode & 0o777).toBe(0o600)

    expect(await json('suspend', tenant)).toEqual({ tenantId: tenant, outcome: 'suspended' })
    await expect(withTenant(app, tenant, (trx) => trx.selectFrom('skills').select('id').execute())).rejects.toThrow(`unknown or inactive tenant "${tenant}"`)

    const deleted = await json('delete', tenant, '--yes', '--batch-size', '7')
    expect(deleted).toMatchObject({ tenantId: tenant, resumed: false, rows: { skills: 30, audit_logs: 30, audit_signatures: 30, users: 1 } })
    expect(Object.values(await tenantDigest(t.url, tenant)).every((d) => d.startsWith('0:'))).toBe(true)
    expect((await json('list')).map((x: { slug: string }) => x.slug)).toEqual(['default'])

    const imported = await json('import', file)
    // Exported before the suspension: it comes back active, and says so.
    expect(imported).toMatchObject({ tenant, active: true, rows: exported.rows, sha256: exported.sha256, tables: exported.tables })
    // Identical rows, as PostgreSQL itself prints them, and an identical file when exported again.
    const after = await tenantDigest(t.url, tenant)
    expect({ ...after, tenants: 'compared below' }).toEqual({ ...before, tenants: 'compared below' })
    // The tenants row is as exported: active (it was exported before the suspension).
    expect(after.tenants).toBe((await tenantDigest(t.url, tenant)).tenants)
    const again = path.join(dir, 'acme-again.ndjson')
    await json('export', tenant, '--out', again)
    expect(readFileSync(again).equals(readFileSync(file))).toBe(true)
    const verify = await runScript(['audit', 'verify', '--tenant', tenant], env)
    expect(verify.code, verify.stderr).toBe(0)
    expect(verify.stdout).toContain('30 chained row(s)')
    // The app carries on in the imported tenant: its chain goes on from the imported head.
    await withTenant(app, tenant, (trx) => recordAudit(trx, { actorId: created.adminId, action: 'after.import' }))
    expect((await runScript(['audit', 'verify', '--tenant', tenant], env)).code).toBe(0)
    const shown = await json('show', 'acme') // by its slug
    expect(shown).toMatchObject({ id: tenant, slug: 'acme', domain: 'acme.example.com', active: true, tables: { skills: { rows: 30 }, audit_logs: { rows: 31 } } })
    expect(shown.tables.skills.bytes).toBeGreaterThan(0)
    expect(shown.history.map((h: { event: string }) => h.event)).toEqual(['created', 'suspended', 'deletion started', 'deleted', 'imported'])
  })

  describe('bad input: one line on stderr, exit 1, nothing half-done', () => {
    let file: string
    let tenant: string
    beforeAll(async () => {
      const made = await json('create', '--name', 'Bad', '--slug', 'bad-input', '--admin-email', 'b@bad.example')
      tenant = made.tenantId
      await withTenant(app, tenant, async (trx) => {
        await recordAudit(trx, { actorId: made.adminId, action: 'one', metadata: { k: [1, null, 'x'] } })
        // JSON null in a NOT NULL jsonb column: version 1 wrote it as null, which only JSON null can have been.
        const skill = await trx.insertInto('skills').values({ name: 'S', slug: 's', description: 'd', category: 'c', content: 'x' }).returning('id').executeTakeFirstOrThrow()
        await trx.insertInto('skill_reviews').values({ skill_id: skill.id, requested_by: made.adminId!, categories: sql`'null'::jsonb`, summary: 's', reviewed_content_hash: 'h', model_name: 'm' }).execute()
        await recordAudit(trx, { actorId: made.adminId, action: 'two' })
      })
      file = path.join(dir, 'bad.ndjson')
      await json('export', tenant, '--out', file)
      await json('suspend', tenant)
      await json('delete', tenant, '--yes')
    })
    const lines = () => readFileSync(file, 'utf8').trimEnd().split('\n')
    /**
     * The file with its manifest's counts and checksums made to fit the altered rows (what a careful
     * forger does), and, with `key`, sealed again with it: what only a holder of the tenant key can do.
     */
    const refit = (rows: string[], key?: string) => {
      const header = rows[0]!
      const body = rows.slice(1, -1)
      const old = JSON.parse(rows.at(-1)!).manifest
      const tables: Record<string, { rows: number; sha256: string }> = {}
      for (const table of ['tenants', ...TABLES]) {
        const mine = body.filter((l) => l.startsWith(`{"t":"${table}",`)).map((l) => `${l}\n`)
        if (mine.length) tables[table] = { rows: mine.length, sha256: createHash('sha256').update(mine.join('')).digest('hex') }
        else tables[table] = { rows: 0, sha256: createHash('sha256').digest('hex') }
      }
      const sha256 = createHash('sha256').update([header, ...body].map((l) => `${l}\n`).join('')).digest('hex')
      const k = key ? parseTenantKey(key, 'test key') : undefined
      const mac = k ? `${k.id}:${createHmac('sha256', k.secret).update(exportMacText(tenant, { sha256, auditHead: old.auditHead }), 'utf8').digest('hex')}` : old.mac
      return [header, ...body, JSON.stringify({ manifest: { tables, rows: body.length, sha256, auditHead: old.auditHead, mac } })]
    }
    const importOf = async (name: string, rows: string[]) => {
      const altered = path.join(dir, name)
      writeFileSync(altered, `${rows.join('\n')}\n`)
      const r = await cli('import', altered)
      expect(r.code).toBe(1)
      expect(await tenantDigest(t.url, tenant)).toMatchObject({ tenants: '0:null', users: '0:null', audit_logs: '0:null' })
      return oneLine(r.stderr).filter((l) => !l.startsWith('database '))
    }

    it.each([
      ['show'], ['export', '--out', path.join(tmpdir(), `skills-db-unknown-${process.pid}.ndjson`)], ['suspend'], ['activate'], ['delete', '--yes'],
    ])('tenant %s of an unknown id', async (command, ...rest) => {
      const r = await cli(command, 'no-such-tenant', ...rest)
      expect(r.code).toBe(1)
      expect(oneLine(r.stderr).filter((l) => !l.startsWith('database '))).toEqual([expect.stringMatching(/^error: no tenant has the id or slug "no-such-tenant": skills-db tenant list shows both/)])
    })

    it('delete without --yes, delete of an active tenant, export over an existing file, create with a bad slug', async () => {
      const noYes = await cli('delete', 'default-tenant-000-0000-000000000000')
      expect(oneLine(noYes.stderr)).toEqual([expect.stringMatching(/^error: tenant delete removes every row of tenant .* add --yes/)])
      const other = (await json('create', '--name', 'Active', '--slug', 'still-active')).tenantId
      const active = await cli('delete', other, '--yes')
      expect(active.code).toBe(1)
      expect(active.stderr).toContain(`error: tenant "${other}" is active: suspend it first`)
      const exists = await cli('export', other, '--out', file)
      expect(oneLine(exists.stderr)).toEqual([`error: ${file} exists: give another --out, or remove it first; see skills-db tenant export --help`])
      // Another export's .partial (writing now, or killed) is not shared: an outside review had two
      // exports to one --out report success for one file holding one tenant.
      const elsewhere = path.join(dir, 'shared.ndjson')
      writeFileSync(`${elsewhere}.partial`, 'another export writes here')
      const shared = await cli('export', other, '--out', elsewhere)
      expect(shared.code).toBe(1)
      expect(oneLine(shared.stderr).filter((l) => !l.startsWith('database '))).toEqual([`error: ${elsewhere}.partial exists: another export is writing it, or one was stopped; remove it once no export runs, or give another --out; see skills-db tenant export --help`])
      expect(readFileSync(`${elsewhere}.partial`, 'utf8')).toBe('another export writes here')
      expect(existsSync(elsewhere)).toBe(false)
      const slug = await cli('create', '--name', 'X', '--slug', 'Not A Slug')
      expect(slug.code).toBe(1)
      expect(slug.stderr).toContain('error: slug "Not A Slug" is not 1 to 63 lowercase letters')
      const taken = await cli('create', '--name', 'X', '--slug', 'still-active')
      expect(oneLine(taken.stderr).filter((l) => !l.startsWith('database '))).toEqual(['error: the slug or domain is taken'])
      const defaultTenant = await cli('delete', 'default-tenant-000-0000-000000000000', '--yes')
      expect(defaultTenant.stderr).toContain('error: the default tenant holds what the single-tenant app writes until the contract phase')
    })

    it('import: a truncated file', async () => {
      expect(await importOf('truncated.ndjson', lines().slice(0, -3))).toEqual([expect.stringMatching(/^error: the file ends at line \d+ without its manifest: it is truncated/)])
    })

    it('import: a row altered', async () => {
      const rows = lines().map((l) => l.replace('"b@bad.example"', '"mallory@bad.example"'))
      expect(await importOf('altered.ndjson', rows)).toEqual([expect.stringMatching(/^error: the file's users rows do not match its manifest .*checksums differ/)])
    })

    it('import: a row altered with the checksums refitted, by someone without the tenant key: the seal says so', async () => {
      const rows = refit(lines().map((l) => l.replace('"b@bad.example"', '"mallory@bad.example"')))
      expect(await importOf('refitted.ndjson', rows)).toEqual(['error: the file\'s seal (the tenant key\'s MAC of its checksum) does not match: it was altered, its checksums refitted'])
      const unknownKey = refit(lines(), 'other:0123456789abcdef0123456789abcdef-other')
      expect(await importOf('other-key.ndjson', unknownKey)).toEqual(['error: the file is sealed with tenant key "other", which this database does not hold: import into a database given the same SKILLS_DB_TENANT_KEYS as the one exported from'])
    })

    it('import: an audit row altered, even sealed again with the tenant key: the hash chain says so', async () => {
      const rows = refit(lines().map((l) => l.replace('"action":"two"', '"action":"deux"')), TEST_TENANT_KEY)
      expect(await importOf('chain.ndjson', rows)).toEqual([expect.stringMatching(/^error: imported audit row .* \(seq 2\) does not continue the tenant's hash chain: the file was altered/)])
    })

    it('import: an audit row removed, or the last ones cut off, even sealed again with the tenant key', async () => {
      const rows = refit(lines().filter((l) => !l.includes('"action":"one"')), TEST_TENANT_KEY)
      expect(await importOf('removed.ndjson', rows)).toEqual([expect.stringMatching(/^error: imported audit row .* \(seq 2\) does not continue/)])
      const cut = refit(lines().filter((l) => !l.includes('"action":"two"') && !(l.startsWith('{"t":"audit_signatures"') && l.includes('"seq":2'))), TEST_TENANT_KEY)
      expect(await importOf('cut.ndjson', cut)).toEqual(['error: the imported audit chain ends at seq 1, the file\'s manifest says seq 2: the file was altered'])
    })

    it('import: the manifest\'s total of rows altered (what the lifecycle record keeps; neither checksummed nor sealed)', async () => {
      const rows = lines()
      const last = JSON.parse(rows.at(-1)!)
      last.manifest.rows = 999999
      rows[rows.length - 1] = JSON.stringify(last)
      expect(await importOf('total.ndjson', rows)).toEqual(['error: the manifest\'s total of rows is not the sum of its tables\' rows: the file was altered'])
    })

    it('import: a damaged manifest or header (tables null, a version as text, migrations not names), and a name holding a newline: one whole line each', async () => {
      const rows = lines()
      const last = JSON.parse(rows.at(-1)!)
      expect(await importOf('tables-null.ndjson', [...rows.slice(0, -1), JSON.stringify({ manifest: { ...last.manifest, tables: null } })])).toEqual([`error: line ${rows.length}, the manifest, is damaged`])
      expect(await importOf('version-text.ndjson', [rows[0]!.replace('"version":2', '"version":"2"'), ...rows.slice(1)])).toEqual(['error: the file is an export of version "2"; this skills-db reads versions 1 and 2: import it with the skills-db that wrote it'])
      expect(await importOf('migrations-objects.ndjson', [rows[0]!.replace('"migrations":[', '"migrations":[{"a":1},'), ...rows.slice(1)])).toEqual(['error: the export\'s header is damaged'])
      const newline = await cli('show', 'foo\nbar')
      expect(newline.code).toBe(1)
      expect(oneLine(newline.stderr).filter((l) => !l.startsWith('database '))).toEqual(['error: no tenant has the id or slug "foo\\nbar": skills-db tenant list shows both; see skills-db tenant show --help'])
    })

    it('import: a file of another schema version', async () => {
      const rows = lines()
      rows[0] = rows[0]!.replace('"0020_tenant_lifecycle"', '"0020_tenant_lifecycle","0021_from_the_future"')
      expect(await importOf('future.ndjson', rows)).toEqual(['error: the file is of another schema: this database lacks 0021_from_the_future; import into a database migrated exactly as the one exported from'])
    })

    it('import: a file of version 1 (json and jsonb columns as JSON, not as their text) still loads, as the same rows', async () => {
      expect(lines()[0]).toContain('"version":2')
      const v1 = lines().map((l, i) => i === 0 ? l.replace('"version":2', '"version":1')
        : l.replace(/"(metadata|categories)":("(?:[^"\\]|\\.)*")/g, (_m, column: string, text: string) => `"${column}":${JSON.parse(text)}`).replace('"tags":"{}"', '"tags":[]'))
      expect(v1.find((l) => l.startsWith('{"t":"audit_logs"') && l.includes('"action":"one"'))).toContain('"metadata":{"k": [1, null, "x"]}')
      expect(v1.find((l) => l.startsWith('{"t":"skill_reviews"'))).toContain('"categories":null')
      expect(v1.find((l) => l.startsWith('{"t":"skills"'))).toContain('"tags":[]')
      const older = path.join(dir, 'version-1.ndjson')
      writeFileSync(older, `${refit(v1, TEST_TENANT_KEY).join('\n')}\n`)
      expect((await json('import', older)).tenant).toBe(tenant)
      const fromV1 = await tenantDigest(t.url, tenant)
      await json('suspend', tenant)
      await json('delete', tenant, '--yes')
      expect((await json('import', file)).tenant).toBe(tenant)
      expect(await tenantDigest(t.url, tenant)).toEqual(fromV1)
      await json('suspend', tenant)
      await json('delete', tenant, '--yes')
      const future = lines()
      future[0] = future[0]!.replace('"version":2', '"version":3')
      expect(await importOf('version-3.ndjson', future)).toEqual(['error: the file is an export of version 3; this skills-db reads versions 1 and 2: import it with the skills-db that wrote it'])
    })

    it('import: not an export at all, and a row of another tenant slipped in', async () => {
      expect(await importOf('garbage.ndjson', ['hello'])).toEqual(['error: the file is not a skills-db tenant export (its first line is not an export\'s header)'])
      const rows = refit(lines().map((l) => l.startsWith('{"t":"users"') ? l.replaceAll(tenant, 'default-tenant-000-0000-000000000000') : l), TEST_TENANT_KEY)
      expect(await importOf('foreign.ndjson', rows)).toEqual([expect.stringMatching(/^error: the file's users rows include rows of another tenant/)])
    })

    it('import: a tenant that exists here, and a slug taken here', async () => {
      expect((await json('import', file)).tenant).toBe(tenant)
      const again = await cli('import', file)
      expect(oneLine(again.stderr).filter((l) => !l.startsWith('database '))).toEqual([`error: tenant "${tenant}" already exists in this database: delete it first (skills-db tenant delete), or import elsewhere`])
      await json('suspend', tenant)
      await json('delete', tenant, '--yes')
      const squatter = (await json('create', '--name', 'Squat', '--slug', 'bad-input')).tenantId
      const taken = await cli('import', file)
      expect(oneLine(taken.stderr).filter((l) => !l.startsWith('database '))).toEqual([`error: slug "bad-input" is taken here by tenant "${squatter}": the import would collide`])
      // A forged file (checksums refitted, no tenant key) learns nothing of what is taken here, nor by whom: it is refused as unsealed (an outside review had it told the owner's id).
      const forged = refit(lines().map((l) => l.startsWith('{"t":"tenants"') ? l.replace(tenant, 'forged-tenant-id') : l).map((l, i) => i === 0 ? l.replace(tenant, 'forged-tenant-id') : l))
      const probe = path.join(dir, 'forged.ndjson')
      writeFileSync(probe, `${forged.join('\n')}\n`)
      const probed = await cli('import', probe)
      expect(probed.code).toBe(1)
      expect(oneLine(probed.stderr).filter((l) => !l.startsWith('database '))).toEqual(['error: the file\'s seal (the tenant key\'s MAC of its checksum) does not match: it was altered, its checksums refitted'])
      // Nor from its progress or the time it takes: opened twice, it is checked whole before a row is loaded.
      for (const slugged of [forged, forged.map((l) => l.replace('"slug":"bad-input"', '"slug":"free-slug"'))]) {
        const progress: unknown[] = []
        const file = refit(slugged)
        await expect(asSuperuser(t.url, (db) => importTenant(db, () => Readable.from([`${file.join('\n')}\n`]), { allowUnconfinedSessions: true, onProgress: (p) => progress.push(p) })))
          .rejects.toThrow('the file\'s seal (the tenant key\'s MAC of its checksum) does not match')
        expect(progress).toEqual([])
      }
      // Nor by swapping the file between the check and the load: the load stops at the first batch that differs from what was checked.
      let opened = 0
      const progress: unknown[] = []
      await expect(asSuperuser(t.url, (db) => importTenant(db, () => Readable.from([`${(opened++ === 0 ? lines() : refit(forged)).join('\n')}\n`]), { allowUnconfinedSessions: true, onProgress: (p) => progress.push(p) })))
        .rejects.toThrow('the file changed between its check and its load')
      expect(opened).toBe(2)
      expect(progress).toEqual([])
    })
  })

  it('delete resumes after kill -9, and the half-deleted tenant cannot be reactivated meanwhile', async () => {
    const tenant: string = (await json('create', '--name', 'Big', '--slug', 'big', '--admin-email', 'big@big.example')).tenantId
    await asSuperuser(t.url, (db) => sql`insert into usage_events (tenant_id, tool_name, user_id)
      select ${tenant}, 'cli', null from generate_series(1, 3000)`.execute(db))
    await json('suspend', tenant)
    const left = async () => (await asSuperuser(t.url, (db) => sql<{ n: number }>`select count(*)::int as n from usage_events where tenant_id = ${tenant}`.execute(db))).rows[0]!.n
    // Killed once it has deleted some, not all, of the rows.
    const child = spawn(process.execPath, ['--import', pathToFileURL(path.join(ROOT, 'node_modules/tsx/dist/loader.mjs')).href, path.join(ROOT, 'src/cli/bin.ts'), 'tenant', 'delete', tenant, '--yes', '--batch-size', '5'],
      { env: { ...process.env, ...env }, stdio: 'ignore' })
    const exited = new Promise((resolve) => child.on('exit', resolve))
    for (let i = 0; i < 600 && (await left()) === 3000; i++) await new Promise((r) => setTimeout(r, 50))
    child.kill('SIGKILL')
    await exited
    const remaining = await left()
    expect(remaining).toBeGreaterThan(0)
    expect(remaining).toBeLessThan(3000)
    const reactivate = await cli('activate', tenant)
    expect(reactivate.stderr).toContain(`error: tenant "${tenant}" is being deleted: finish it with skills-db tenant delete`)
    // Nor exported: the file would be sealed, importable and partial (an outside review imported one, then reactivated it).
    const partial = await cli('export', tenant, '--out', path.join(dir, 'half.ndjson'))
    expect(partial.code).toBe(1)
    expect(oneLine(partial.stderr).at(-1)).toBe(`error: tenant "${tenant}" is being deleted (a delete stopped before it finished, and some of its rows are gone): an export now would be partial; finish it with skills-db tenant delete ${tenant} --yes, and import an export made before the delete`)
    expect(existsSync(path.join(dir, 'half.ndjson')) || existsSync(path.join(dir, 'half.ndjson.partial'))).toBe(false)
    expect(await json('show', tenant)).toMatchObject({ id: tenant, beingDeleted: true, active: false })
    const resumed = await json('delete', tenant, '--yes')
    expect(resumed).toMatchObject({ resumed: true })
    expect(await left()).toBe(0)
    expect(Object.values(await tenantDigest(t.url, tenant)).every((d) => d.startsWith('0:'))).toBe(true)
  })

  it('a row whose text holds U+2028 and U+2029 (which to_json leaves unescaped): export, delete, import give the same rows and the same file (an outside review had such an export refused)', async () => {
    const made = await json('create', '--name', 'Line\u2028Sep\u2029Inc', '--slug', 'line-separators', '--admin-email', 'ls@ls.example')
    const tenant: string = made.tenantId
    await withTenant(app, tenant, (trx) => trx.updateTable('users').set({ name: 'Ann\u2028Lee' }).where('id', '=', made.adminId).execute())
    const before = await tenantDigest(t.url, tenant)
    const file = path.join(dir, 'separators.ndjson')
    await json('export', tenant, '--out', file)
    expect(readFileSync(file, 'utf8')).toContain('Ann\u2028Lee')
    await json('suspend', tenant)
    await json('delete', tenant, '--yes')
    const imported = await cli('import', file)
    expect(imported.stderr).not.toMatch(/^error/m)
    expect(imported.code).toBe(0)
    expect(await tenantDigest(t.url, tenant)).toEqual(before)
    const again = path.join(dir, 'separators-again.ndjson')
    await json('export', tenant, '--out', again)
    expect(readFileSync(again, 'utf8')).toBe(readFileSync(file, 'utf8'))
  })

  it('a tenant named by what is one tenant\'s id and another\'s slug: refused in one line, nothing done; id: and slug: say which (an outside review had the wrong tenant suspended and deleted)', async () => {
    const victim: string = (await json('create', '--name', 'Victim', '--slug', 'victim')).tenantId
    // Anyone signing up may pick a slug that is another tenant's id: ids are not secret.
    const evil: string = (await createTenant(app, { name: 'Evil', slug: victim })).tenantId
    for (const command of [['suspend', victim], ['show', victim], ['export', victim, '--out', path.join(dir, 'which.ndjson')], ['delete', victim, '--yes']]) {
      const r = await cli(...command)
      expect(r.code, command[0]).toBe(1)
      expect(oneLine(r.stderr).at(-1), command[0]).toBe(`error: "${victim}" is the id of one tenant (slug victim) and the slug of another (id ${evil}): say which, id:${victim} or slug:${victim}; see skills-db tenant ${command[0]} --help`)
    }
    expect(await json('show', `id:${victim}`)).toMatchObject({ id: victim, slug: 'victim', active: true })
    expect(await json('suspend', `slug:${victim}`)).toMatchObject({ tenantId: evil, outcome: 'suspended' })
    expect(await json('show', `id:${victim}`)).toMatchObject({ id: victim, active: true })
    const none = await cli('show', 'slug:no-such-slug')
    expect(oneLine(none.stderr).at(-1)).toBe('error: no tenant has the slug "no-such-slug": skills-db tenant list shows the slugs; see skills-db tenant show --help')
  })

  it('show and export behind a session that holds a table (the app role\'s LOCK TABLE): they stop within --lock-retry-budget-ms, naming it, and leave no file (an outside review had both hang, holding the migration lock)', async () => {
    const tenant: string = (await json('create', '--name', 'Held', '--slug', 'held')).tenantId
    const holder = t.connectAs(inject('appRole'))
    let release!: () => void
    const released = new Promise<void>((r) => (release = r))
    const holding = holder.transaction().execute(async (trx) => {
      await sql`lock table users in access exclusive mode`.execute(trx)
      await released
    })
    try {
      await new Promise((r) => setTimeout(r, 200))
      for (const command of [['show', tenant], ['export', tenant, '--out', path.join(dir, 'held.ndjson')]]) {
        const started = Date.now()
        const r = await cli(...command, '--lock-retry-budget-ms', '1500')
        expect(r.code, command[0]).toBe(1)
        expect(oneLine(r.stderr).at(-1), command[0]).toMatch(/^error: gave up after 1\.5 s waiting for a table to read, held by pid \d+ \(.*, holds (public\.)?users, lock table users in access exclusive mode\): end that session, or run the command again once it has ended$/)
        expect(Date.now() - started, command[0]).toBeLessThan(30_000)
      }
      expect(existsSync(path.join(dir, 'held.ndjson')) || existsSync(path.join(dir, 'held.ndjson.partial'))).toBe(false)
    } finally {
      release()
      await holding
      await holder.destroy()
    }
    expect(await json('show', tenant)).toMatchObject({ id: tenant, beingDeleted: false })
  })

  it('every other tenant command behind a held table (tenants held by another owner session; users by the app role during an import): it stops within --lock-retry-budget-ms in one line naming the holder (an outside review had list, suspend, a slug\'s lookup and import wait with no end)', async () => {
    const tenant: string = (await json('create', '--name', 'Held too', '--slug', 'held-too', '--admin-email', 'h@held.example')).tenantId
    const file = path.join(dir, 'held-too.ndjson')
    await json('export', tenant, '--out', file)
    await json('suspend', tenant)
    await json('delete', tenant, '--yes')
    const holding = async (role: 'owner' | 'app', table: string, commands: string[][]) => {
      const holder = role === 'app' ? t.connectAs(inject('appRole')) : createDb<any>(t.url, { max: 1 })
      let release!: () => void
      const released = new Promise<void>((r) => (release = r))
      const held = holder.transaction().execute(async (trx) => {
        await sql`lock table ${sql.table(table)} in access exclusive mode`.execute(trx)
        await released
      })
      try {
        await new Promise((r) => setTimeout(r, 200))
        for (const command of commands) {
          const r = await cli(...command, '--lock-retry-budget-ms', '1500')
          expect(r.code, command.join(' ')).toBe(1)
          expect(oneLine(r.stderr).at(-1), command.join(' ')).toMatch(new RegExp(`^error: gave up after 1\\.5 s waiting for a (lock|table to read), held by pid \\d+ \\(.*holds (public\\.)?${table}.*\\): end that session, or run the command again once it has ended$`))
        }
      } finally {
        release()
        await held
        await holder.destroy()
      }
    }
    await holding('owner', 'tenants', [['list'], ['show', 'held'], ['suspend', 'held'], ['create', '--name', 'Blocked', '--slug', 'blocked', '--force']])
    await holding('app', 'users', [['import', file]])
    // Nothing was half-done: the import goes through now, and nothing was created.
    expect(await json('import', file)).toMatchObject({ tenant })
    expect((await json('list')).map((x: { slug: string }) => x.slug)).not.toContain('blocked')
  })

  it.each([
    ['lock table skills_db.migration_lock in access exclusive mode', 'LOCK TABLE'],
    ['lock table skills_db.migration_lock in share mode', 'a weaker LOCK TABLE'],
    ['select 1 from skills_db.migration_lock for key share', 'a row lock'],
    ['update skills_db.migration_lock set view_hash = view_hash', 'an update of the row'],
  ])('behind a session of the owner holding skills_db.migration_lock (%s: %s), tenant commands and the migrator stop within --lock-retry-budget-ms in one line naming it (an outside review had them hang with no word, or wait 30 min)', async (statement) => {
    const holder = createDb<any>(t.url, { max: 1, applicationName: 'lock-squatter' })
    let release!: () => void
    const released = new Promise<void>((r) => (release = r))
    const held = holder.transaction().execute(async (trx) => {
      await sql.raw(statement).execute(trx)
      await released
    })
    try {
      await new Promise((r) => setTimeout(r, 200))
      for (const command of [['list'], ['create', '--name', 'Squatted', '--slug', 'squatted', '--force']]) {
        const started = Date.now()
        const r = await cli(...command, '--lock-retry-budget-ms', '1500')
        expect(r.code, command.join(' ')).toBe(1)
        expect(oneLine(r.stderr).at(-1), command.join(' ')).toMatch(/^error: gave up after 1\.5 s waiting for skills_db\.migration_lock(|'s row), held by pid \d+ \(lock-squatter, .*holds skills_db\.migration_lock.*\): end that session \(while it holds the table or its row, no migrator or tenant command can start\)$/)
        expect(Date.now() - started).toBeLessThan(30_000)
      }
      const migrator = await runScript(['latest', '--no-codegen', '--lock-retry-budget-ms', '1500'], env)
      expect(migrator.code).toBe(1)
      expect(migrator.stderr).toMatch(/gave up after 1\.5 s waiting for skills_db\.migration_lock(|'s row), held by pid \d+ \(lock-squatter/)
    } finally {
      release()
      await held
      await holder.destroy()
    }
    expect((await json('list')).map((x: { slug: string }) => x.slug)).not.toContain('squatted')
  })

  it('the migrator behind a LOCK TABLE of its own table (skills_db.kysely_migration): one line naming that session (an outside review got PostgreSQL\'s bare "canceling statement due to lock timeout")', async () => {
    const holder = createDb<any>(t.url, { max: 1, applicationName: 'journal-squatter' })
    let release!: () => void
    const released = new Promise<void>((r) => (release = r))
    const held = holder.transaction().execute(async (trx) => {
      await sql`lock table skills_db.kysely_migration in access exclusive mode`.execute(trx)
      await released
    })
    try {
      await new Promise((r) => setTimeout(r, 200))
      const migrator = await runScript(['latest', '--no-codegen', '--lock-retry-budget-ms', '1500'], env)
      expect(migrator.code).toBe(1)
      expect(migrator.stderr).toMatch(/gave up waiting for a lock, held by pid \d+ \(journal-squatter, .*holds skills_db\.kysely_migration/)
    } finally {
      release()
      await held
      await holder.destroy()
    }
  })

  it('behind a row another session locked (SELECT … FOR UPDATE of the tenant\'s row): suspend stops within --lock-retry-budget-ms naming that session (an outside review had "a session that has since finished" named while it ran)', async () => {
    const tenant: string = (await json('create', '--name', 'Row held', '--slug', 'row-held')).tenantId
    const holder = createDb<any>(t.url, { max: 1, applicationName: 'row-holder' })
    let release!: () => void
    const released = new Promise<void>((r) => (release = r))
    const held = holder.transaction().execute(async (trx) => {
      await sql`select 1 from tenants where id = ${tenant} for update`.execute(trx)
      await released
    })
    try {
      await new Promise((r) => setTimeout(r, 200))
      const r = await cli('suspend', tenant, '--lock-retry-budget-ms', '1500')
      expect(r.code).toBe(1)
      expect(oneLine(r.stderr).at(-1)).toMatch(/^error: gave up after 1\.5 s waiting for a lock, held by one of pid \d+ \(row-holder, .*holds .*tenants/)
    } finally {
      release()
      await held
      await holder.destroy()
    }
  })

  it('behind a migrator (a session holding the migration lock\'s key), a tenant command says on stderr what it waits for, then goes ahead', async () => {
    const holder = createDb<any>(t.url, { max: 1, applicationName: 'busy-migrator' })
    try {
      await sql`select pg_catalog.pg_advisory_lock(lock_key) from skills_db.migration_lock`.execute(holder)
      const listing = cli('list', '--json')
      await new Promise((r) => setTimeout(r, 3000))
      await sql`select pg_catalog.pg_advisory_unlock_all()`.execute(holder)
      const r = await listing
      expect(r.code, r.stderr).toBe(0)
      expect(r.stderr).toMatch(/another migrator pid \d+ \(busy-migrator\) is running; waiting for it to finish/)
      expect(JSON.parse(r.stdout).length).toBeGreaterThan(0)
    } finally {
      await holder.destroy()
    }
  })

  it('a reactivation racing the start of a delete: either the delete refuses, or the reactivation does (an outside review had both succeed)', async () => {
    const tenant: string = (await json('create', '--name', 'Race', '--slug', 'race-delete')).tenantId
    await json('suspend', tenant)
    // Holds the delete between its check and its listing of the tenant (an uncommitted listing of the same tenant).
    const blocker = createDb<any>(t.url, { max: 1, applicationName: 'blocker' })
    try {
      await sql`begin`.execute(blocker)
      await sql`insert into skills_db.tenant_removals (tenant_id, slug) values (${tenant}, 'race-delete')`.execute(blocker)
      const deleting = cli('delete', tenant, '--yes')
      const waiting = async () => (await asSuperuser(t.url, (db) => sql`select 1 from pg_stat_activity where datname = current_database()
        and application_name = 'skills-db migrator' and wait_event_type = 'Lock'`.execute(db))).rows.length > 0
      for (let i = 0; i < 400 && !(await waiting()); i++) await new Promise((r) => setTimeout(r, 50))
      expect(await waiting()).toBe(true)
      const reactivating = activateTenant(app, tenant).then((o) => ({ ok: o }), (e: Error) => ({ error: e.message }))
      await new Promise((r) => setTimeout(r, 300))
      await sql`rollback`.execute(blocker)
      const [deleted, reactivated] = await Promise.all([deleting, reactivating])
      expect(deleted.code, deleted.stderr).toBe(0)
      expect(reactivated).toEqual({ error: `tenant "${tenant}" is being deleted: finish it with skills-db tenant delete` })
      expect((await tenantDigest(t.url, tenant)).tenants).toBe('0:null')
    } finally {
      await blocker.destroy()
    }
  })

  it('a request that entered before the suspension and writes after it: delete waits for it, then removes what it wrote (an outside review had such a row outlive the tenant)', async () => {
    const made = await json('create', '--name', 'Late', '--slug', 'late-writer', '--admin-email', 'l@late.example')
    const tenant: string = made.tenantId
    // Long enough that the delete (a process of its own, started after the suspension) lists the tenant while it sleeps.
    const late = withTenant(app, tenant, async (trx) => {
      await sql`select pg_sleep(8)`.execute(trx)
      await recordAudit(trx, { actorId: made.adminId, action: 'written after the suspension' })
    })
    await new Promise((r) => setTimeout(r, 500))
    await json('suspend', tenant)
    const deleted = await json('delete', tenant, '--yes')
    await late
    expect(deleted.rows).toMatchObject({ users: 1, audit_logs: 1, audit_signatures: 1 }) // the late row counted: taken once the request ended
    expect(Object.values(await tenantDigest(t.url, tenant)).every((d) => d.startsWith('0:'))).toBe(true)
    const { rows } = await asSuperuser(t.url, (db) => sql`select 1 from skills_db.audit_chain_heads where tenant_id = ${tenant}`.execute(db))
    expect(rows).toEqual([])
  })

  it('the whole lifecycle beside the other tenants\' requests: none of them fails; the export, taken while the tenant is written to, is one snapshot', async () => {
    let running = true
    const errors: unknown[] = []
    const slowest = { ms: 0 }
    const stays: string = (await json('create', '--name', 'Stays', '--slug', 'stays', '--admin-email', 's@stays.example')).tenantId
    const load = Promise.all(Array.from({ length: 4 }, async (_, i) => {
      while (running) {
        const started = performance.now()
        await withTenant(app, i % 2 ? stays : 'default-tenant-000-0000-000000000000', async (trx) => {
          await trx.insertInto('usage_events').values({ tool_name: 'load' }).execute()
          return trx.selectFrom('usage_events').select('id').limit(5).execute()
        }).catch((e) => errors.push(e))
        slowest.ms = Math.max(slowest.ms, performance.now() - started)
      }
    }))
    try {
      // Signed up by the app itself, beside the load (no superuser session is open meanwhile).
      const made = await createTenant(app, { name: 'Going', slug: 'going' }, { email: 'g@going.example' })
      const tenant = made.tenantId
      await asSuperuser(t.url, (db) => sql`insert into usage_events (tenant_id, tool_name) select ${tenant}, 'cli' from generate_series(1, 5000)`.execute(db))
      // The tenant's own requests write pairs across two tables (a skill and its rating), one pair
      // per transaction, while it is exported: the export reads skills before ratings, so a pair
      // split by reading each table at its own moment would show as a rating without its skill.
      let writing = true
      const writerErrors: unknown[] = []
      const writer = (async () => {
        for (let n = 0; writing; n++) {
          await withTenant(app, tenant, async (trx) => {
            const skill = await trx.insertInto('skills').values({ name: `P${n}`, slug: `pair-${n}`, description: 'd', category: 'c', content: 'x' }).returning('id').executeTakeFirstOrThrow()
            await trx.insertInto('ratings').values({ skill_id: skill.id, user_id: made.adminId!, rating: 3, comment: 'pair' }).execute()
          }).catch((e) => writerErrors.push(e))
        }
      })()
      const file = path.join(dir, 'going.ndjson')
      const exported = await json('export', tenant, '--out', file)
      writing = false
      await writer
      expect(writerErrors).toEqual([])
      const lines = readFileSync(file, 'utf8').split('\n')
      const skills = lines.filter((l) => l.startsWith('{"t":"skills"') && l.includes('"slug":"pair-')).length
      const ratings = lines.filter((l) => l.startsWith('{"t":"ratings"') && l.includes('"comment":"pair"')).length
      expect(ratings, `${skills} skills and ${ratings} ratings of pairs in the file: a pair split by the export's reads`).toBe(skills)
      expect(skills).toBeGreaterThan(0)
      expect(await suspendTenant(app, tenant)).toBe('suspended')
      const deleted = await json('delete', tenant, '--yes', '--batch-size', '500')
      expect(deleted.rows.usage_events).toBe(5000)
      expect(deleted.rows.skills).toBeGreaterThanOrEqual(skills)
      expect((await json('import', file)).sha256).toBe(exported.sha256)
      const again = path.join(dir, 'going-again.ndjson')
      await json('export', tenant, '--out', again)
      expect(readFileSync(again).equals(readFileSync(file))).toBe(true)
    } finally {
      running = false
      await load
    }
    expect(errors).toEqual([])
    console.log(`the tenant lifecycle beside 4 callers of other tenants: slowest request ${slowest.ms.toFixed(0)} ms (a measure, not a goal of this test: see npm run bench)`)
  })

  it('a superuser session connected: create refuses and names it; --force goes ahead', async () => {
    const held = createDb<any>(t.url, { max: 1, applicationName: 'dba-psql' })
    try {
      await sql`select 1`.execute(held)
      const refused = await cli('create', '--name', 'Guarded', '--slug', 'guarded')
      expect(refused.code).toBe(1)
      expect(oneLine(refused.stderr).filter((l) => !l.startsWith('database '))).toEqual([expect.stringMatching(/^error: refusing to create a tenant while superuser or BYPASSRLS sessions are connected to the database \(pid \d+ \(postgres, dba-psql\)\): .* create it with skills-db tenant create --force$/)])
      expect((await json('create', '--name', 'Guarded', '--slug', 'guarded', '--force')).created).toBe(true)
    } finally {
      await held.destroy()
    }
  })

  it('--help for every tenant command, and the list of them', async () => {
    const all = await runScript(['tenant', '--help'], env)
    expect(all.code).toBe(0)
    for (const command of ['list', 'show', 'create', 'suspend', 'activate', 'export', 'import', 'delete']) {
      expect(all.stdout).toContain(`  ${command} `)
      const help = await cli(command, '--help')
      expect(help.code).toBe(0)
      expect(help.stdout).toMatch(new RegExp(`^skills-db tenant ${command}`))
      expect(help.stdout).toContain('--json')
    }
    const unknown = await cli('rename')
    expect(unknown.code).toBe(1)
    expect(oneLine(unknown.stderr)).toEqual(['error: unknown tenant command "rename" (list, show, create, suspend, activate, export, import, delete); see skills-db tenant --help'])
  })
})
