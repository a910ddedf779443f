import { describe, expect, it, inject } from 'vitest'
import { withDatabase } from '../src/connection/database-url.ts'
import { useTestDatabase } from './support/database.ts'
import { runScript } from './support/cli.ts'

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
    expect(status.stdout).toMatch(/0 pending, 0 unknown/)
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
      [['latest'], { DATABASE_URL: 'not a url' }, /DATABASE_URL is not a valid URL/],
      [['latest'], { DATABASE_URL: 'mysql://x@localhost/db' }, /must start with postgres:\/\//],
      [['latest'], { DATABASE_URL: 'postgres://postgres@127.0.0.1:1/x' }, /cannot reach PostgreSQL at 127\.0\.0\.1:1/],
      [['latest'], { DATABASE_URL: withDatabase(t.url, 'skills_no_such_db') }, /database "skills_no_such_db" does not exist .*createdb/],
      [['frobnicate'], { DATABASE_URL: t.url }, /unknown command "frobnicate"/],
      [['latest', '--bogus'], { DATABASE_URL: t.url }, /Unknown option '--bogus'/],
      [['down', '--to', '0042_nope'], { DATABASE_URL: t.url }, /^error: unknown migration "0042_nope" for --to; applied: 0001_baseline$/],
      [['make'], {}, /migrate:make needs exactly one name/],
      [['make', '../evil'], {}, /migration name "\.\.\/evil" is not allowed/],
      [['make', '0001_baseline'.slice(5)], {}, /a migration named "baseline" already exists: 0001_baseline\.ts/],
      [['latest', '--lock-timeout-ms', 'soon'], { DATABASE_URL: t.url }, /--lock-timeout-ms must be a positive whole number, not "soon"/],
      [['latest'], { DATABASE_URL: t.url, SKILLS_DB_TENANT_KEYS: 'k1:short' }, /SKILLS_DB_TENANT_KEYS\)?: the secret of key "k1" has 5 characters; use at least 32/],
    ]
    for (const [args, env, expected] of cases) {
      const r = await runScript(args, env)
      expect(r.code, `${args.join(' ')}: ${r.stdout}${r.stderr}`).toBe(1)
      expect(oneLineError(r.stderr)).toMatch(expected)
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
