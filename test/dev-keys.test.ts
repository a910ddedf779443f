import { execFileSync } from 'node:child_process'
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { afterEach, describe, expect, it } from 'vitest'
import { applyDevKeys, devKeysFile, loadOrCreateDevKeys } from '../src/connection/dev-keys.ts'
import { parseTenantKey } from '../src/tenancy/tenant-key.ts'
import { runScript } from './support/cli.ts'
import { useTestDatabase } from './support/database.ts'
import { freePort } from './support/free-port.ts'

// The test run's own keys (vitest.config.ts) are in process.env: the runs below go without them.
const NO_KEYS = { SKILLS_DB_TENANT_KEY: undefined, SKILLS_DB_TENANT_KEYS: undefined, SKILLS_DB_AUDIT_KEY: undefined, SKILLS_DB_AUDIT_KEYS: undefined }

const dirs: string[] = []
/** A checkout of its own (the keys and the embedded data live under the working directory), readable by the postgres OS user a root run uses. */
function scratchDir(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'skills-db-dev-keys-'))
  chmodSync(dir, 0o755)
  dirs.push(dir)
  return dir
}
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true })
})

describe('the development keys of the embedded server', () => {
  it('are generated once (mode 0600, valid keys), then read back; the file is also a shell script', () => {
    const file = devKeysFile(scratchDir())
    const first = loadOrCreateDevKeys(file)
    expect(first.created).toBe(true)
    expect(statSync(file).mode & 0o777).toBe(0o600)
    expect(parseTenantKey(first.keys.tenantKey, 'tenant key').id).toBe('dev')
    expect(parseTenantKey(first.keys.auditKey, 'audit key').id).toBe('dev-audit')
    expect(loadOrCreateDevKeys(file)).toEqual({ keys: first.keys, created: false })
    const sourced = execFileSync('sh', ['-c', `. "${file}"; echo "$SKILLS_DB_TENANT_KEYS $SKILLS_DB_TENANT_KEY $SKILLS_DB_AUDIT_KEYS $SKILLS_DB_AUDIT_KEY"`], { encoding: 'utf8' })
    expect(sourced.trim()).toBe(`${first.keys.tenantKey} ${first.keys.tenantKey} ${first.keys.auditKey} ${first.keys.auditKey}`)
  })

  it('fill in only the pairs the environment lacks; a file that holds no keys is refused with what to do', () => {
    const file = devKeysFile(scratchDir())
    const env: NodeJS.ProcessEnv = { SKILLS_DB_TENANT_KEYS: 'mine:0123456789abcdef0123456789abcdef' }
    expect(applyDevKeys(env, file)).toEqual({ created: true, applied: true })
    const { keys } = loadOrCreateDevKeys(file)
    expect(env).toEqual({ SKILLS_DB_TENANT_KEYS: 'mine:0123456789abcdef0123456789abcdef', SKILLS_DB_AUDIT_KEYS: keys.auditKey, SKILLS_DB_AUDIT_KEY: keys.auditKey })
    const set = { SKILLS_DB_TENANT_KEY: 'a', SKILLS_DB_AUDIT_KEY: 'b' }
    expect(applyDevKeys(set, devKeysFile(scratchDir()))).toEqual({ created: false, applied: false })
    writeFileSync(file, 'nothing here\n')
    expect(() => loadOrCreateDevKeys(file)).toThrow(/does not hold the development keys .*: delete it, and the next command on the embedded server writes new ones/)
  })

  it('npm run migrate:latest on the embedded server stores the generated key; the next commands sign with it, read back from .data/', { timeout: 300_000 }, async () => {
    const cwd = scratchDir()
    const env = { ...NO_KEYS, DATABASE_URL: undefined, EMBEDDED_PG_PORT: String(await freePort()) }
    const latest = await runScript(['latest', '--no-codegen'], env, { cwd })
    expect(latest.code, latest.stderr).toBe(0)
    expect(latest.stderr).toMatch(/^generated the embedded server's development keys in \.data\/dev-keys\.env/m)
    expect(latest.stdout).toMatch(/^ {2}tenant keys stored: dev$/m)
    expect(latest.stdout).not.toMatch(/no tenant key is stored yet/)
    const file = devKeysFile(cwd)
    const written = readFileSync(file, 'utf8')
    expect(statSync(file).mode & 0o777).toBe(0o600)

    // The key the database holds is the one in the file: a tenant made by the CLI is signed with it.
    const open = await runScript(['open', '--no-codegen'], env, { cwd })
    expect(open.code, open.stderr).toBe(0)
    const created = await runScript(['tenant', 'create', '--name', 'Acme', '--slug', 'acme'], env, { cwd })
    expect(created.code, created.stderr).toBe(0)
    expect(created.stdout).toMatch(/^created tenant \S+ \(acme\)$/m)
    for (const run of [open, created]) expect(run.stderr).not.toMatch(/generated/)
    expect(readFileSync(file, 'utf8')).toBe(written)
  })

  describe('never for a database given by URL', () => {
    const t = useTestDatabase('migrated')
    it('latest with DATABASE_URL, or with --url, and no keys in the environment writes no key file', async () => {
      const cwd = scratchDir()
      const byEnv = await runScript(['latest', '--no-codegen'], { ...NO_KEYS, DATABASE_URL: t.url }, { cwd })
      expect(byEnv.code, byEnv.stderr).toBe(0)
      const byFlag = await runScript(['status', '--url', t.url], { ...NO_KEYS }, { cwd })
      expect(byFlag.code, byFlag.stderr).toBe(0)
      expect(existsSync(path.join(cwd, '.data'))).toBe(false)
    })
  })
})
