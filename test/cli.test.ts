import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { sql } from 'kysely'
import { describe, expect, it, inject } from 'vitest'
import { withDatabase } from '../src/connection/database-url.ts'
import { createTestDatabase, useTestDatabase } from './support/database.ts'
import { ROOT, runScript } from './support/cli.ts'

const oneLineError = (stderr: string) => {
  const lines = stderr.trim().split('\n')
  expect(lines).toHaveLength(1)
  expect(lines[0]).toMatch(/^error: /)
  return lines[0]!
}

describe('CLI', () => {
  const t = useTestDatabase('empty')

  it('latest, status and down print each migration with its result and duration', async () => {
    const env = { DATABASE_URL: t.url }
    const up = await runScript(['latest', '--no-codegen', '--app-role', inject('appRole')], env)
    expect(up.code, up.stderr).toBe(0)
    expect(up.stdout).toMatch(/up +0001_baseline done in \d+ ms/)
    expect(up.stdout).toMatch(/done: \d+ migration\(s\) applied/)
    const again = await runScript(['latest', '--no-codegen'], env)
    expect(again.stdout).toMatch(/already up to date/)
    const status = await runScript(['status'], env)
    expect(status.stdout).toMatch(/applied +0001_baseline +\d{4}-\d\d-\d\dT/)
    expect(status.stdout).toMatch(/^  pending  0010_contract_tenant_keys  \(waits for the operator: skills-db contract, once the single-tenant app is retired\)$/m)
    expect(status.stdout).toMatch(/^  pending  0014_open_to_more_tenants  \(waits for the operator: skills-db open, before a second tenant is created, once the single-tenant app runs on a confined role\)$/m)
    expect(status.stdout).toMatch(/7 pending, 0 unknown; phase: expand/)
    expect(up.stdout).toMatch(/waiting for the operator: 0014_open_to_more_tenants, 0016_truncate_within_one_tenant, 0017_reserve_key_hash_index_name, 0018_side_channels_judge_citus_shards, 0020_tenant_lifecycle \(the open phase: run skills-db open before a second tenant is created, once the single-tenant app runs on a confined role\)/)
    expect(up.stdout).toMatch(/waiting for the operator: 0010_contract_tenant_keys, 0015_contract_without_side_channels \(the contract phase: run skills-db contract once the single-tenant app is retired\)/)
    const all = await runScript(['down', '--to', 'all', '--no-codegen'], env)
    expect(all.code, all.stderr).toBe(0)
    expect(all.stdout).toMatch(/down 0001_baseline done in \d+ ms/)
    const none = await runScript(['down', '--no-codegen'], env)
    expect(none.code).toBe(1)
    expect(oneLineError(none.stderr)).toBe('error: nothing to roll back: no migration is applied')
  })

  it('bad input: a one-line reason and a non-zero exit', async () => {
    // One migration applied, so `down --to` meets a history without the name it is given.
    expect((await runScript(['up', '--no-codegen', '--app-role', inject('appRole')], { DATABASE_URL: t.url })).code).toBe(0)
    const cases: [string[], Record<string, string>, RegExp][] = [
      [['latest'], { DATABASE_URL: 'not a url' }, /^error: DATABASE_URL is not a valid URL/],
      [['latest', '--url', 'not a url'], {}, /^error: --url is not a valid URL/],
      [['latest'], { DATABASE_URL: 'mysql://x@localhost/db' }, /must start with postgres:\/\//],
      [['latest'], { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/x' }, /cannot reach PostgreSQL at 127\.0\.0\.1:1/],
      [['latest'], { DATABASE_URL: withDatabase(t.url, 'skills_no_such_db') }, /database "skills_no_such_db" does not exist .*createdb/],
      [['frobnicate'], { DATABASE_URL: t.url }, /^error: unknown command "frobnicate"; see skills-db --help$/],
      [['latest', '--bogus'], { DATABASE_URL: t.url }, /^error: unknown option --bogus for skills-db latest; see skills-db latest --help$/],
      [['latest', '--to', 'x'], { DATABASE_URL: t.url }, /unknown option --to for skills-db latest; see skills-db latest --help/],
      [['down', '--to'], { DATABASE_URL: t.url }, /option --to needs a value; see skills-db down --help/],
      [['open', '--force=yes'], { DATABASE_URL: t.url }, /option --force takes no value \(give --force alone, or --no-force\); see skills-db open --help/],
      [['down', '--to', '0042_nope'], { DATABASE_URL: t.url }, /^error: unknown migration "0042_nope" to roll back to; applied: 0001_baseline$/],
      [['make'], {}, /skills-db make needs <name>; see skills-db make --help/],
      [['make', 'a', 'b'], {}, /unexpected argument "b" for skills-db make/],
      [['make', '../evil'], {}, /migration name "\.\.\/evil" is not allowed/],
      [['make', '0001_baseline'.slice(5)], {}, /a migration named "baseline" already exists: 0001_baseline\.ts/],
      [['latest', '--lock-timeout-ms', 'soon'], { DATABASE_URL: t.url }, /--lock-timeout-ms must be a positive whole number, not "soon"/],
      [['distribute', '--shard-count', '0'], { DATABASE_URL: t.url }, /--shard-count must be a positive whole number, not "0"/],
      [['distribute', '--online-from', 'big'], { DATABASE_URL: t.url }, /--online-from must be a number of MB, 0 or more, or off, not "big"/],
      [['distribute', '--online-from=-1'], { DATABASE_URL: t.url }, /--online-from must be a number of MB, 0 or more, or off, not "-1"/],
      [['distribute', '--online-from', '0x10'], { DATABASE_URL: t.url }, /--online-from must be a number of MB, 0 or more, or off, not "0x10"/],
      [['latest'], { DATABASE_URL: t.url, SKILLS_DB_TENANT_KEYS: 'k1:short' }, /SKILLS_DB_TENANT_KEYS\)?: the secret of key "k1" has 5 characters; use at least 32/],
    ]
    for (const [args, env, expected] of cases) {
      const r = await runScript(args, env)
      expect(r.code, `${args.join(' ')}: ${r.stdout}${r.stderr}`).toBe(1)
      expect(oneLineError(r.stderr)).toMatch(expected)
    }
  }, 120_000) // 22 child processes: on a loaded 2-CPU machine (the tenant CLI's tests spawn beside it) a minute was not always enough

  it('a refusal an option overrules names the flag, not the library option', async () => {
    const d = await createTestDatabase('empty')
    try {
      const env = { DATABASE_URL: d.url }
      expect((await runScript(['up', '--no-codegen', '--app-role', inject('appRole')], env)).code).toBe(0)
      await sql`insert into users (id, email) values ('u1', 'a@b')`.execute(d.admin)
      const refused = await runScript(['down', '--no-codegen'], env)
      expect(refused.code).toBe(1)
      expect(oneLineError(refused.stderr)).toMatch(/^error: 0001_baseline: refusing to roll back: .*; run it again with --force to accept the loss$/)
      expect((await runScript(['down', '--force', '--no-codegen'], env)).code).toBe(0)
    } finally {
      await d.close()
    }
    const m = await createTestDatabase('migrated')
    try {
      await sql.raw(`alter database "${m.name}" set timezone to 'America/New_York'`).execute(m.admin)
      // The test's own superuser pool is connected: a session row security cannot confine.
      const beside = await runScript(['contract', '--no-codegen'], { DATABASE_URL: m.url })
      expect(beside.code).toBe(1)
      expect(oneLineError(beside.stderr)).toMatch(/^error: 0010_contract_tenant_keys: the single-tenant app may still be running, .*: pid \d+ .*\. Stop it first; if none of these sessions is the old app, skills-db contract --force goes ahead$/)
      const refused = await runScript(['contract', '--force', '--no-codegen'], { DATABASE_URL: m.url })
      expect(refused.code).toBe(1)
      expect(oneLineError(refused.stderr)).toMatch(/^error: 0010_contract_tenant_keys: the server's TimeZone is America\/New_York, .*; if they are UTC anyway, skills-db contract --timestamps-are-utc$/)
    } finally {
      await m.close()
    }
  })

  it('--help for the tool and for every command; --version', async () => {
    const tool = await runScript(['--help'], {})
    expect(tool.code).toBe(0)
    for (const command of ['latest', 'up', 'down', 'contract', 'status', 'check', 'distribute', 'make', 'codegen', 'verify']) {
      expect(tool.stdout).toMatch(new RegExp(`^  ${command} +\\S`, 'm'))
      const help = await runScript([command, '--help'], {})
      expect(help.code, command).toBe(0)
      expect(help.stdout).toMatch(new RegExp(`^skills-db ${command}`))
    }
    expect((await runScript(['down', '--help'], {})).stdout).toMatch(/--to <name>\|all +roll back every migration after <name>/)
    expect((await runScript(['latest', '-h'], {})).stdout).toMatch(/--old-app-role <name> .*\(repeatable\)/)
    // The npm scripts are the same bin: each names a command it has.
    const scripts = JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')).scripts as Record<string, string>
    for (const name of ['migrate:latest', 'migrate:up', 'migrate:down', 'migrate:status', 'migrate:contract', 'migrate:make', 'codegen', 'check:citus', 'distribute']) {
      const command = scripts[name]?.match(/^tsx src\/cli\/bin\.ts (\w+)/)?.[1]
      expect(command, name).toBeDefined()
      expect(tool.stdout, name).toMatch(new RegExp(`^  ${command} +\\S`, 'm'))
    }
    const version = await runScript(['--version'], {})
    expect(version.stdout.trim()).toBe(JSON.parse(readFileSync(`${ROOT}package.json`, 'utf8')).version)
    const none = await runScript([], {})
    expect(none.code).toBe(1)
    expect(none.stdout).toMatch(/Usage: skills-db <command>/)
  })

  it('types: written where asked, only at the latest migration; verify prints the difference a hand-made change makes', async () => {
    const d = await createTestDatabase('empty')
    const dir = mkdtempSync(path.join(tmpdir(), 'skills-db-types-'))
    try {
      const file = path.join(dir, 'db.ts')
      const env = { DATABASE_URL: d.url }
      const up = await runScript(['latest', '--app-role', inject('appRole'), '--types-out', file], env)
      expect(up.code, up.stderr).toBe(0)
      expect(up.stdout).toContain(`wrote ${file}`)
      expect(readFileSync(file, 'utf8')).toBe(readFileSync(`${ROOT}src/db-types.ts`, 'utf8'))
      expect((await runScript(['latest', '--types-out', file], env)).stdout).toContain(`unchanged: ${file}`)
      // A down leaves the types of the latest schema in place, so the app's build keeps working.
      const down = await runScript(['down', '--types-out', file], env)
      expect(down.code, down.stderr).toBe(0)
      expect(down.stdout).toMatch(/not regenerated: the database is not at the latest migration \(1 migration\(s\) pending\)/)
      expect(readFileSync(file, 'utf8')).toBe(readFileSync(`${ROOT}src/db-types.ts`, 'utf8'))
      // codegen itself refuses there: it would have written the types of the older schema.
      const behind = await runScript(['codegen', '--types-out', file], env)
      expect(behind.code).toBe(1)
      expect(oneLineError(behind.stderr)).toMatch(/the database is not at the latest migration \(1 migration\(s\) pending\): run skills-db latest first .* is left as it was/)
      expect(readFileSync(file, 'utf8')).toBe(readFileSync(`${ROOT}src/db-types.ts`, 'utf8'))
      expect((await runScript(['latest'], env)).code).toBe(0)

      expect((await runScript(['verify'], env)).stdout).toMatch(/the database matches .*src\/db-types\.ts/)
      await sql`alter table skills add column hand_made integer`.execute(d.admin)
      const drift = await runScript(['verify', '--types', file], env)
      expect(drift.code).toBe(1)
      expect(drift.stdout).toMatch(/^\+ +hand_made: number \| null;$/m)
      expect(oneLineError(drift.stderr)).toMatch(/the database's schema differs from/)
      const codegen = await runScript(['codegen', '--types-out', file], env)
      expect(codegen.code, codegen.stderr).toBe(0)
      expect(readFileSync(file, 'utf8')).toMatch(/hand_made: number \| null;/)
      expect(oneLineError((await runScript(['codegen'], { DATABASE_URL: d.url }, { cwd: dir })).stderr)).toMatch(/codegen needs a file to write: pass --types-out <file>/)
    } finally {
      rmSync(dir, { recursive: true, force: true })
      await d.close()
    }
  })

  it('bad credentials are named as such', async () => {
    // An unknown user is refused under every auth method (trust servers accept any password).
    const u = new URL(t.url)
    u.username = `${inject('runId')}_nobody`
    u.password = 'wrong'
    const r = await runScript(['status'], { DATABASE_URL: u.toString() })
    expect(r.code).toBe(1)
    expect(oneLineError(r.stderr)).toMatch(new RegExp(`rejected user "${u.username}": check the user name and password`))
  })
})
