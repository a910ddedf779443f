import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'
import type { Kysely } from 'kysely'
import { writeTypes } from '../codegen/generate-types.ts'
import { migrationStatus } from '../migrator/migration-status.ts'
import { UsageError, type OptionValues } from './command.ts'

/**
 * Where the app wants the schema's types: --types-out, else `"skills-db": { "typesOut": … }` in the
 * package.json of the directory the command runs in; undefined when it asked for none.
 */
export function configuredTypesFile(values: OptionValues, cwd = process.cwd()): string | undefined {
  if (typeof values['types-out'] === 'string') return path.resolve(cwd, values['types-out'])
  const manifest = path.join(cwd, 'package.json')
  if (!existsSync(manifest)) return undefined
  let config: unknown
  try {
    config = (JSON.parse(readFileSync(manifest, 'utf8')) as Record<string, unknown>)['skills-db']
  } catch {
    throw new UsageError(`${manifest} is not valid JSON`)
  }
  const out = (config as { typesOut?: unknown } | undefined)?.typesOut
  if (out === undefined) return undefined
  if (typeof out !== 'string' || !out) throw new UsageError(`"skills-db".typesOut in ${manifest} must be a file path`)
  return path.resolve(cwd, out)
}

/**
 * After a run, brings the types file up to date with the schema, but only when the database is at
 * the newest migration: types of a rolled-back schema would break the app's build, and types are
 * meant to follow the latest schema. Written only when they changed.
 */
export async function refreshTypes(db: Kysely<any>, url: string, file: string): Promise<void> {
  const why = await notAtLatest(db)
  if (why) {
    console.log(`types in ${shown(file)} not regenerated: the database is not at the latest migration (${why}); they follow the latest schema`)
    return
  }
  const wrote = await writeTypes(url, file)
  console.log(`${wrote ? 'wrote' : 'unchanged:'} ${shown(file)}`)
}

/**
 * Why the database's types are not the latest schema's, or undefined when they are. What waits for
 * the operator (the open and contract phases) does not hold the types back: latest is done.
 */
export async function notAtLatest(db: Kysely<any>): Promise<string | undefined> {
  const status = await migrationStatus(db)
  const behind = status.pending.filter((name) => !status.waiting.includes(name))
  if (behind.length > 0) return `${behind.length} migration(s) pending`
  if (status.unknown.length > 0) return 'it records migrations this code does not have'
  return undefined
}

/** A file as a message names it: relative to where the command runs when it is under it. */
export function shown(file: string): string {
  const relative = path.relative(process.cwd(), file)
  return relative && !relative.startsWith('..') ? relative : file
}
