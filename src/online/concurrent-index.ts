import { sql, type Kysely } from 'kysely'
import { columnList, indexInfo } from './catalog.ts'
import { progress } from './progress.ts'
import type { Step } from './step.ts'

export interface IndexSpec {
  table: string
  name: string
  columns: string[]
  unique?: boolean
}

/**
 * Builds an index CONCURRENTLY: reads and writes go on during the build. An INVALID index left by
 * an interrupted build is dropped and built again. Runs outside any transaction, with no lock
 * timeout: the build waits for older transactions, but nothing waits for the build.
 */
export async function buildIndexConcurrently(db: Kysely<any>, spec: IndexSpec): Promise<void> {
  const existing = await indexInfo(db, spec.name)
  if (existing?.valid) return
  if (existing) {
    progress(`  dropping INVALID index ${spec.name} left by an interrupted build`)
    await sql`drop index concurrently if exists ${sql.id(spec.name)}`.execute(db)
  }
  await sql`set lock_timeout = 0`.execute(db)
  await sql`create ${sql.raw(spec.unique ? 'unique ' : '')}index concurrently ${sql.id(spec.name)}
    on ${sql.table(spec.table)} (${columnList(spec.columns)})`.execute(db)
}

export async function dropIndexConcurrently(db: Kysely<any>, name: string): Promise<void> {
  if (await indexInfo(db, name)) await sql`drop index concurrently if exists ${sql.id(name)}`.execute(db)
}

/** A plain index, built and dropped CONCURRENTLY. */
export function index(spec: IndexSpec): Step {
  return {
    name: `index ${spec.name}`,
    up: (db) => buildIndexConcurrently(db, spec),
    down: (db) => dropIndexConcurrently(db, spec.name),
  }
}
