import { sql } from 'kysely'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import path from 'node:path'
import { createDb } from '../connection/create-db.ts'

/** kysely-codegen is an optional peer: only codegen and verify need it. */
export class CodegenUnavailableError extends Error {
  override name = 'CodegenUnavailableError'
}

type Codegen = typeof import('kysely-codegen')

async function loadCodegen(): Promise<Codegen> {
  try {
    const loaded = (await import('kysely-codegen')) as Codegen & { default?: Codegen }
    // A CommonJS package: imported from ESM, its module.exports is the default export.
    return loaded.default ?? loaded
  } catch (error) {
    const message = (error as Error).message ?? String(error)
    // What is missing: kysely-codegen, or a package it loads without declaring it (typescript, with
    // kysely-codegen 0.20: a newcomer had "not installed" for a package that was installed).
    const missing = /Cannot find (?:package|module) '([^']+)'/.exec(message)?.[1]
    if (missing === undefined || missing === 'kysely-codegen' || missing.includes('/kysely-codegen/')) {
      throw new CodegenUnavailableError(missing ? 'kysely-codegen is not installed, and generating or verifying types needs it: npm install --save-dev kysely-codegen typescript'
        : `kysely-codegen did not load (${message.split('\n')[0]}): npm install --save-dev kysely-codegen typescript, then run it again`)
    }
    throw new CodegenUnavailableError(`kysely-codegen is installed but needs ${missing}, which it does not install itself: npm install --save-dev ${missing}`)
  }
}

/**
 * The TypeScript kysely-codegen makes of the database's `public` schema: the app's tables, not the
 * migrator's bookkeeping or the tenant context, which live in schemas of their own, nor what an
 * extension keeps in public.
 */
export async function renderTypes(url: string): Promise<string> {
  const { generate, PostgresDialect } = await loadCodegen()
  const dialect = new PostgresDialect()
  // Our own pool, not the one kysely-codegen's introspector opens for itself: that one has no 'error'
  // listener, so a server that closes a connection the pool is still ending (a scratch database
  // dropped WITH (FORCE) right after, a restart) crashed the process with an unhandled 'error'.
  const db = createDb<unknown>(url, { max: 1, applicationName: 'skills-db codegen' })
  try {
    // bytea as Uint8Array, not kysely-codegen's Buffer: the types then need no @types/node in an app
    // that typechecks without Node's globals (pg hands back a Buffer, which is a Uint8Array).
    // Not what an extension put in public (Citus's citus_tables and citus_schemas views): not the app's.
    const { rows } = await sql<{ name: string }>`select c.relname as name from pg_catalog.pg_class c
      where c.relnamespace = 'public'::regnamespace and exists (select 1 from pg_catalog.pg_depend d
        where d.classid = 'pg_catalog.pg_class'::regclass and d.objid = c.oid and d.deptype = 'e') order by 1`.execute(db)
    const excludePattern = rows.length === 0 ? null : `public.${rows.length === 1 ? rows[0]!.name : `{${rows.map((r) => r.name).join(',')}}`}`
    return await generate({ db, dialect, includePattern: 'public.*', excludePattern, outFile: null, typeMapping: { bytea: 'Uint8Array' } })
  } finally {
    await db.destroy()
  }
}

/** Writes the database's types to `file`, and only when they differ from what it holds: true when it wrote. */
export async function writeTypes(url: string, file: string): Promise<boolean> {
  const next = await renderTypes(url)
  if ((await readFile(file, 'utf8').catch(() => undefined)) === next) return false
  await mkdir(path.dirname(file), { recursive: true })
  await writeFile(file, next)
  return true
}

/**
 * How the database's types differ from `expected` (a file kysely-codegen made), as a unified diff
 * from the file to the database (`+` is what the database has and the file lacks), or undefined
 * when they are the same: a column added by hand, a table missing, a type changed.
 */
export async function typesDiff(url: string, expected: string): Promise<string | undefined> {
  const { DiffChecker } = await loadCodegen()
  const actual = await renderTypes(url)
  if (actual === expected) return undefined
  return new DiffChecker().diff(expected, actual) ?? 'they differ in white space only'
}
