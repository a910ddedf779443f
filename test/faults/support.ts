import { spawn } from 'node:child_process'
import { sql, type Kysely } from 'kysely'
import { inject } from 'vitest'
import { countsAt, fillProductionCopy } from '../../bench/lib/production-copy.ts'
import { createDb } from '../../src/connection/create-db.ts'
import { withDatabase } from '../../src/connection/database-url.ts'
import { createScratchDatabase, scratchName } from '../../src/connection/scratch-database.ts'
import { ROOT } from '../support/cli.ts'
import { APP_TABLES, LEGACY_SQL } from '../support/legacy.ts'

/** A production copy at `scale`, built once and cloned per trial (its name, for TEMPLATE). */
export async function buildProductionCopy(scale: number): Promise<string> {
  const name = scratchName(`${inject('runId')}_base`)
  const db = createDb<any>(await createScratchDatabase(inject('adminUrl'), name), { max: 1 })
  try {
    await sql.raw(LEGACY_SQL).execute(db)
    await fillProductionCopy(db, countsAt(scale))
  } finally {
    await db.destroy()
  }
  return name
}

export async function cloneOf(template: string): Promise<{ name: string; url: string }> {
  const name = scratchName(`${inject('runId')}_trial`)
  return { name, url: await createScratchDatabase(inject('adminUrl'), name, template) }
}

/** Per app table, a checksum of every row's values without tenant_id: "every row, same values". */
export async function checksums(db: Kysely<any>): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  for (const table of APP_TABLES) {
    const { rows } = await sql<{ c: string }>`
      select count(*) || ':' || coalesce(md5(string_agg((to_jsonb(t) - 'tenant_id')::text, ',' order by t.id)), '') as c
      from ${sql.table(table)} t`.execute(db)
    out[table] = rows[0]!.c
  }
  return out
}

export interface CliRun {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

/**
 * Runs `migrate <args>` in a child process; with `killOn`, sends SIGKILL `delayMs` after a line
 * matching it appears (the migration's own progress lines say where it is).
 */
export function runMigrateCli(url: string, args: string[], killOn?: { marker: RegExp; delayMs: number }): Promise<CliRun> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/bin.ts', ...args, '--no-codegen', '--app-role', inject('appRole')], {
      cwd: ROOT,
      env: { ...process.env, DATABASE_URL: url },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    let armed = !!killOn
    child.stdout.on('data', (d) => {
      stdout += d
      if (armed && killOn!.marker.test(stdout)) {
        armed = false
        setTimeout(() => child.kill('SIGKILL'), killOn!.delayMs)
      }
    })
    child.stderr.on('data', (d) => (stderr += d))
    child.on('error', reject)
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }))
  })
}

export const adminDb = (url: string) => createDb<any>(url, { max: 2 })
export const adminUrlFor = (url: string) => withDatabase(url, 'postgres')
