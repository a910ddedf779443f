import { randomBytes } from 'node:crypto'
import pg from 'pg'
import { withDatabase } from './database-url.ts'
import { connectClient } from './pg-client.ts'

/** A throwaway database name: lower-case, unique per call, recognisable by its prefix for clean-up. */
export function scratchName(prefix: string): string {
  return `${prefix}_${randomBytes(5).toString('hex')}`
}

/** Runs one statement on the server's `postgres` database (CREATE/DROP DATABASE cannot run elsewhere). */
export async function adminQuery(adminUrl: string, text: string, params: unknown[] = []): Promise<pg.QueryResult> {
  const client = await connectClient({ connectionString: withDatabase(adminUrl, 'postgres') })
  try {
    return await client.query(text, params)
  } finally {
    await client.end()
  }
}

/** Creates a database (optionally cloned from a template) and returns its URL. */
export async function createScratchDatabase(adminUrl: string, name: string, template?: string): Promise<string> {
  const id = pg.escapeIdentifier
  await adminQuery(adminUrl, `create database ${id(name)}${template ? ` template ${id(template)}` : ''}`)
  return withDatabase(adminUrl, name)
}

/** Drops a database even if sessions are still connected to it (PG 13+). */
export async function dropScratchDatabase(adminUrl: string, name: string): Promise<void> {
  await adminQuery(adminUrl, `drop database if exists ${pg.escapeIdentifier(name)} with (force)`)
}

/** Creates a scratch database, hands its URL to `cb`, and always drops it. */
export async function usingScratchDatabase<T>(adminUrl: string, prefix: string, cb: (url: string) => Promise<T>): Promise<T> {
  const name = scratchName(prefix)
  const url = await createScratchDatabase(adminUrl, name)
  try {
    return await cb(url)
  } finally {
    await dropScratchDatabase(adminUrl, name)
  }
}
