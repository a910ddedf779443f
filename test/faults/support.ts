import { sql, type Kysely } from 'kysely'
import { inject } from 'vitest'
import { countsAt, fillProductionCopy } from '../../fixtures/production-copy.ts'
import { createDb } from '../../src/connection/create-db.ts'
import { createScratchDatabase, scratchName } from '../../src/connection/scratch-database.ts'
import { LEGACY_SQL, rowDigests } from '../../fixtures/legacy.ts'
import { takeSchemaSnapshot, type SchemaSnapshot } from '../../src/catalog/schema-snapshot.ts'
import { runScript, type CliResult } from '../support/cli.ts'

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

/**
 * Runs the CLI's `args` against `url` in a child process; with `killOn`, SIGKILLs it `delayMs`
 * after a line matching `marker` appears.
 */
export function runMigrateCli(url: string, args: string[], killOn?: { marker: RegExp; delayMs: number }): Promise<CliResult> {
  return runScript([...args, '--no-codegen', '--app-role', inject('appRole')], { DATABASE_URL: url }, killOn ? { killOn } : {})
}

export const adminDb = (url: string) => createDb<any>(url, { max: 2 })

/** What a run must leave, whether it was killed on the way or not: the schema, and every row's values. */
export interface MigratedState {
  schema: SchemaSnapshot
  sums: Record<string, string>
}

export async function migratedState(db: Kysely<any>): Promise<MigratedState> {
  return { schema: await takeSchemaSnapshot(db), sums: await rowDigests(db) }
}
