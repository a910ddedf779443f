import { sql, type Kysely } from 'kysely'
import { inject } from 'vitest'
import { countsAt, fillProductionCopy } from '../../fixtures/production-copy.ts'
import { createDb } from '../../src/connection/create-db.ts'
import { createScratchDatabase, dropScratchDatabase, scratchName } from '../../src/connection/scratch-database.ts'
import { LEGACY_SQL, rowDigests } from '../../fixtures/legacy.ts'
import { takeSchemaSnapshot, type SchemaSnapshot } from '../../src/catalog/schema-snapshot.ts'
import { runScript, type CliResult } from '../support/cli.ts'
import { runUntilKilled, type KillPoint } from './kill-point.ts'

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

/** Runs the CLI's `args` against `url` in a child process, to the end (kill-point.ts kills one). */
export function runMigrateCli(url: string, args: string[]): Promise<CliResult> {
  return runScript([...args, '--no-codegen', '--app-role', inject('appRole')], { DATABASE_URL: url })
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

/** The migrations recorded as applied, oldest first. */
export async function appliedMigrations(db: Kysely<any>): Promise<string[]> {
  const { rows } = await sql<{ name: string }>`select name from skills_db.kysely_migration order by name`.execute(db)
  return rows.map((r) => r.name)
}

/** How many clones a trial may use to land its kill: a statement it must be seen running can be missed. */
const ATTEMPTS = 3

export type Landed =
  | { ok: true; db: Kysely<any>; url: string; where: string; drop(): Promise<void> }
  | { ok: false; why: string }

/**
 * Runs the CLI's `args` on a clone of `template` (after `prepare`) and kills it at `point`; a new
 * clone for each attempt whose kill did not land there. Returns the clone as the cut left it (drop
 * it when done), or why no attempt landed.
 */
export async function cutAt(template: string, args: string[], point: KillPoint, prepare?: (db: Kysely<any>, url: string) => Promise<void>): Promise<Landed> {
  const missed: string[] = []
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    const clone = await cloneOf(template)
    const db = adminDb(clone.url)
    const drop = async () => {
      await db.destroy()
      await dropScratchDatabase(inject('adminUrl'), clone.name)
    }
    try {
      await prepare?.(db, clone.url)
      const cut = await runUntilKilled(clone.url, args, point)
      if (cut.landed) return { ok: true, db, url: clone.url, where: attempt ? `${cut.where} (attempt ${attempt + 1}; missed: ${missed.join('; ')})` : cut.where, drop }
      missed.push(cut.where)
    } catch (error) {
      await drop()
      throw error
    }
    await drop()
  }
  return { ok: false, why: `the kill did not land in ${ATTEMPTS} attempts on this machine: ${[...new Set(missed)].join('; ')}` }
}
