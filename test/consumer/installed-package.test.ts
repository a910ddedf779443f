import { execFile } from 'node:child_process'
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { promisify } from 'node:util'
import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { createDb } from '../../src/connection/create-db.ts'
import { createScratchDatabase, dropScratchDatabase, scratchName } from '../../src/connection/scratch-database.ts'
import { ROOT } from '../support/cli.ts'
import { LEGACY_ROWS, LEGACY_SQL } from '../../fixtures/legacy.ts'
import { MIGRATION_NAMES } from '../support/migration-names.ts'

const exec = promisify(execFile)
const KEY = `app:${'k'.repeat(40)}`
/** The oldest releases of the peers that package.json claims: what an app may have. */
const PEERS = ['kysely@0.29.0', 'pg@8.11.0', 'kysely-codegen@0.20.0', 'kysely-ctl@0.21.0', 'typescript@5.9.3']

interface Run { code: number; stdout: string; stderr: string }

/** Runs a command in the app's directory; never throws, so a test can assert on a failure. */
async function inApp(app: string, command: string, args: string[], env: Record<string, string> = {}): Promise<Run> {
  try {
    const { stdout, stderr } = await exec(command, args, { cwd: app, env: { ...process.env, DATABASE_URL: '', ...env }, maxBuffer: 16 << 20 })
    return { code: 0, stdout, stderr }
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string }
    return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' }
  }
}

describe('skills-db installed from its tarball into an app with its own kysely and pg', () => {
  const adminUrl = inject('adminUrl')
  const appRole = inject('appRole')
  const made: string[] = []
  let work: string
  let app: string
  let files: string[]
  const node = (script: string, env: Record<string, string> = {}) => inApp(app, process.execPath, ['--input-type=module', '-e', script], env)
  const bin = (args: string[], env: Record<string, string> = {}) => inApp(app, process.execPath, [path.join(app, 'node_modules/skills-db/dist/cli/bin.js'), ...args], env)
  const database = async (legacy = false) => {
    const name = scratchName(`${inject('runId')}_c`)
    made.push(name)
    const url = await createScratchDatabase(adminUrl, name)
    if (legacy) {
      const db = createDb<any>(url, { max: 1 })
      await sql.raw(LEGACY_SQL + LEGACY_ROWS).execute(db)
      await db.destroy()
    }
    return url
  }
  const as = (url: string, user: string) => {
    const u = new URL(url)
    u.username = user
    u.password = 'test'
    return u.toString()
  }

  beforeAll(async () => {
    work = mkdtempSync(path.join(tmpdir(), 'skills-db-consumer-'))
    // npm pack runs prepack: the build.
    const packed = await exec('npm', ['pack', '--json', '--pack-destination', work], { cwd: ROOT, maxBuffer: 16 << 20 })
    const [info] = JSON.parse(packed.stdout.slice(packed.stdout.indexOf('['))) as { filename: string; files: { path: string }[] }[]
    files = info!.files.map((f) => f.path).sort()
    app = path.join(work, 'app')
    mkdirSync(path.join(app, 'src'), { recursive: true })
    writeFileSync(path.join(app, 'package.json'), JSON.stringify({ name: 'an-app', private: true, type: 'module' }))
    const install = await inApp(app, 'npm', ['install', '--no-audit', '--no-fund', path.join(work, info!.filename), ...PEERS])
    expect(install.code, install.stderr).toBe(0)
  })
  afterAll(async () => {
    for (const name of made) await dropScratchDatabase(adminUrl, name)
    if (work) rmSync(work, { recursive: true, force: true })
  })

  it('the tarball holds the library, the migrations, the bin, README, LICENSE and the pages the README links to only', () => {
    // The docs travel with the README, whose links into docs/ an installed package's reader follows
    // (a newcomer found them dead in node_modules); not the generated API reference, tests or sources.
    expect(files.filter((f) => !f.startsWith('dist/')).sort()).toEqual(['ARCHITECTURE.md', 'DEVELOPERS.md', 'LICENSE', 'README.md',
      'docs/app.md', 'docs/bench.md', 'docs/bench/chart.svg', 'docs/citus.md', 'docs/design/tenant-context.md', 'docs/design/tenant-lifecycle.md',
      'docs/production.md', 'docs/security.md', 'docs/security/side-channels.md', 'package.json'])
    expect(files.filter((f) => /\.ts$/.test(f) && !f.endsWith('.d.ts'))).toEqual([])
    expect(files).toContain('dist/cli/bin.js')
    expect(files).toContain('dist/migrations/0008_session_bound_tenant_context.js')
    // No test, bench code or data: of docs/bench/, only the chart bench.md shows.
    expect(files.filter((f) => /test|bench|\.svg$/.test(f))).toEqual(['docs/bench.md', 'docs/bench/chart.svg'])
  })

  it('one copy of kysely and of pg: the app\'s', async () => {
    const ls = await inApp(app, 'npm', ['ls', 'kysely', 'pg', '--all', '--parseable'])
    const copies = ls.stdout.trim().split('\n').filter((l) => /node_modules\/(kysely|pg)$/.test(l))
    expect(copies.map((l) => path.relative(app, l)).sort()).toEqual(['node_modules/kysely', 'node_modules/pg'])
  })

  it('plain Node ESM imports the runtime API', async () => {
    const r = await node(`import * as db from 'skills-db'; console.log(Object.keys(db).sort().join(' '))`)
    expect(r.code, r.stderr).toBe(0)
    expect(r.stdout.trim().split(' ')).toEqual(expect.arrayContaining(['createDb', 'withTenant', 'recordAudit', 'resolveApiKey', 'migrateToLatest', 'skillsDbMigrator', 'MigrationError', 'Refusal']))
  })

  it('tsc (NodeNext, strict) typechecks a typed tenant query against the app\'s own Kysely, and rejects a wrong column', async () => {
    writeFileSync(path.join(app, 'tsconfig.json'), JSON.stringify({
      compilerOptions: { module: 'NodeNext', moduleResolution: 'NodeNext', target: 'ES2022', strict: true, noEmit: true, types: [], skipLibCheck: false },
      include: ['src/query.ts'],
    }))
    writeFileSync(path.join(app, 'src/query.ts'), `
      import type { Kysely } from 'kysely'
      import { createDb, withTenant, type DB, type TableRow } from 'skills-db'
      // createDb's Kysely is the app's Kysely: one copy of the library.
      export const db: Kysely<DB> = createDb('postgres://app_user@localhost/skills')
      export function topSkills(tenantId: string): Promise<Pick<TableRow<'skills'>, 'slug' | 'total_uses'>[]> {
        return withTenant(db, tenantId, (trx) => trx.selectFrom('skills').select(['slug', 'total_uses']).orderBy('total_uses', 'desc').limit(10).execute())
      }
    `)
    const ok = await inApp(app, process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json'])
    expect(ok.code, ok.stdout + ok.stderr).toBe(0)
    writeFileSync(path.join(app, 'src/query.ts'), readFileSync(path.join(app, 'src/query.ts'), 'utf8').replace("'total_uses']).orderBy", "'no_such_column']).orderBy"))
    const wrong = await inApp(app, process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json'])
    expect(wrong.code).not.toBe(0)
    expect(wrong.stdout).toMatch(/no_such_column/)
  })

  it('the bin answers --help and migrates a database; the app then runs a typed withTenant query', async () => {
    const help = await bin(['--help'])
    expect(help.code).toBe(0)
    expect(help.stdout).toMatch(/Usage: skills-db <command>/)
    expect((await bin(['latest', '--help'])).stdout).toMatch(/--types-out <file>/)
    expect((await bin(['latest'])).stderr).toMatch(/^error: no database to connect to: set DATABASE_URL or pass --url/m)

    const url = await database()
    const migrated = await bin(['latest', '--url', url, '--app-role', appRole, '--types-out', 'src/db.ts'], { SKILLS_DB_TENANT_KEYS: KEY })
    expect(migrated.code, migrated.stderr).toBe(0)
    expect(migrated.stdout).toMatch(new RegExp(`up +${MIGRATION_NAMES.at(-1)} done in \\d+ ms`))
    expect(migrated.stdout).toMatch(/tenant keys stored: app/)
    expect(readFileSync(path.join(app, 'src/db.ts'), 'utf8')).toMatch(/export interface DB \{/)
    expect((await bin(['verify', '--url', url])).stdout).toMatch(/the database matches/)
    // A second tenant needs the open phase first (0013 refuses it until then).
    const opened = await bin(['open', '--url', url], { SKILLS_DB_TENANT_KEYS: KEY })
    expect(opened.code, opened.stderr).toBe(0)

    const admin = createDb<any>(url, { max: 1 })
    // (This test's own superuser session is not an old app: the guard on tenants may let it be.)
    await sql.raw(`begin; set local skills_db.unconfined_sessions_ok = on; insert into tenants (id, name, slug) values ('acme', 'Acme', 'acme'); commit`).execute(admin)
    await admin.destroy()
    const query = await node(`
      import { createDb, withTenant } from 'skills-db'
      const db = createDb(process.env.APP_URL)
      const skill = await withTenant(db, 'acme', async (trx) => {
        await trx.insertInto('skills').values({ name: 'Lint', slug: 'lint', description: 'd', category: 'dev', content: 'c' }).execute()
        return trx.selectFrom('skills').select(['slug', 'tenant_id']).executeTakeFirstOrThrow()
      })
      console.log(JSON.stringify(skill))
      await db.destroy()`, { APP_URL: as(url, appRole), SKILLS_DB_TENANT_KEY: KEY })
    expect(query.code, query.stderr).toBe(0)
    expect(JSON.parse(query.stdout)).toEqual({ slug: 'lint', tenant_id: 'acme' })
  })

  it('migrateToLatest() from the installed package adopts a single-tenant database and applies the migrations of its dist/', async () => {
    const url = await database(true)
    const r = await node(`
      import { createDb, migrateToLatest } from 'skills-db'
      const db = createDb(process.env.URL, { max: 1 })
      const lines = []
      const outcome = await migrateToLatest(db, { appRole: process.env.APP_ROLE, logger: { info: (m) => lines.push(m) } })
      console.log(JSON.stringify({ outcome, lines }))
      await db.destroy()`, { URL: url, APP_ROLE: appRole })
    expect(r.code, r.stderr).toBe(0)
    const { outcome, lines } = JSON.parse(r.stdout) as { outcome: { status: string; adopted: boolean; steps: { name: string }[] }; lines: string[] }
    expect(outcome).toMatchObject({ status: 'applied', adopted: true })
    expect(outcome.steps.map((s) => s.name)).toEqual(MIGRATION_NAMES.slice(1))
    expect(lines).toContain('adopted the existing single-tenant schema: 0001_baseline recorded as applied (not run)')
  })

  it('kysely-ctl with skillsDbMigrator() adopts and migrates as skills-db does; pointed at the folder, it stops before any migration runs', async () => {
    const url = await database(true)
    writeFileSync(path.join(app, 'kysely.config.mjs'), `
      import { defineConfig } from 'kysely-ctl'
      import { createDb, skillsDbMigrator } from 'skills-db'
      export default defineConfig({
        kysely: () => createDb(process.env.DATABASE_URL, { max: 1 }),
        migrations: process.env.RAW_FOLDER
          ? { migrationFolder: 'node_modules/skills-db/dist/migrations', allowJS: true }
          : { migrator: skillsDbMigrator({ appRole: process.env.APP_ROLE, logger: { info: (m) => console.log(m) } }) },
      })`)
    // kysely-ctl prints through consola, which is quiet under a test runner's NODE_ENV and TEST.
    const kysely = (args: string[], env: Record<string, string>) =>
      inApp(app, process.execPath, ['node_modules/kysely-ctl/dist/bin.mjs', ...args], { DATABASE_URL: url, APP_ROLE: appRole, NODE_ENV: 'production', TEST: '', VITEST: '', ...env })

    const raw = await kysely(['migrate', 'latest'], { RAW_FOLDER: '1' })
    expect(raw.code).not.toBe(0)
    expect(raw.stdout + raw.stderr).toMatch(/skills-db's migrations run only through skills-db's migrator/)
    const admin = createDb<any>(url, { max: 1 })
    expect((await sql`select to_regclass('tenants')::text as t`.execute(admin)).rows).toEqual([{ t: null }])

    const latest = await kysely(['migrate', 'latest'], {})
    expect(latest.code, latest.stdout + latest.stderr).toBe(0)
    expect(latest.stdout).toMatch(/adopted the existing single-tenant schema/)
    expect(latest.stdout + latest.stderr).toMatch(new RegExp(`Ran ${MIGRATION_NAMES.length - 1} migrations`))
    const status = (await sql<{ n: number }>`select count(*)::int as n from skills_db.kysely_migration`.execute(admin)).rows[0]!.n
    await admin.destroy()
    expect(status).toBe(MIGRATION_NAMES.length)
    const list = await kysely(['migrate', 'list'], {})
    expect(list.code, list.stderr).toBe(0)
    expect(list.stdout + list.stderr).toMatch(/0008_session_bound_tenant_context/)
  })
})
