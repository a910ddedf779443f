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

/**
 * Creates a database (optionally cloned from a template) and returns its URL. A clone gets the
 * template's privileges on the database too (CREATE DATABASE copies the contents, not those: a
 * clone would let PUBLIC create temporary tables again, which 0012 took away).
 */
export async function createScratchDatabase(adminUrl: string, name: string, template?: string): Promise<string> {
  const id = pg.escapeIdentifier
  await adminQuery(adminUrl, `create database ${id(name)}${template ? ` template ${id(template)}` : ''}`)
  if (template) {
    const { rows } = await adminQuery(adminUrl, `select r.rolname as grantee, a.privilege_type as privilege
      from pg_database d, aclexplode(d.datacl) a left join pg_roles r on r.oid = a.grantee where d.datname = $1`, [template])
    if (rows.length > 0) {
      await adminQuery(adminUrl, `revoke all on database ${id(name)} from public; ${rows.map((r) =>
        `grant ${r.privilege} on database ${id(name)} to ${r.grantee === null ? 'public' : id(r.grantee)};`).join(' ')}`)
    }
  }
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
