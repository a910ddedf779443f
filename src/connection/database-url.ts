/** What skills-db needs to know about a connection string, checked before any socket is opened. */
export interface DatabaseTarget {
  url: string
  host: string
  port: number
  database: string
  user: string
}

/** What is wrong with a connection string; `problem` completes a sentence about wherever it came from. */
export class DatabaseUrlError extends Error {
  /** Always `'DatabaseUrlError'`, so a log line or a check of `error.name` tells it apart. */
  override name = 'DatabaseUrlError'
  constructor(
    /** What is wrong, as the end of a sentence: `has no host (expected …)`. */
    readonly problem: string,
  ) {
    super(`the database URL ${problem}`)
  }
}

/**
 * Validates a `postgres://` URL and names the part that is wrong.
 *
 * @example
 * parseDatabaseUrl('postgres://app@db.internal:5432/skills') // { host: 'db.internal', port: 5432, ... }
 */
export function parseDatabaseUrl(url: string): DatabaseTarget {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    throw new DatabaseUrlError(
      `is not a valid URL (expected postgres://user:password@host:5432/database)`,
    )
  }
  if (parsed.protocol !== 'postgres:' && parsed.protocol !== 'postgresql:') {
    throw new DatabaseUrlError(
      `must start with postgres:// or postgresql://, not ${parsed.protocol}//`,
    )
  }
  const socketHost = parsed.searchParams.get('host')
  const host = decodeURIComponent(parsed.hostname) || socketHost || ''
  if (!host) throw new DatabaseUrlError('has no host (expected postgres://user@host:5432/database)')
  const port = parsed.port === '' ? 5432 : Number(parsed.port)
  const database = decodeURIComponent(parsed.pathname.replace(/^\//, ''))
  if (!database) throw new DatabaseUrlError('names no database (add /<database> after the host)')
  if (database.includes('/')) throw new DatabaseUrlError(`names a database, "${database}", that contains "/"`)
  return { url, host, port, database, user: decodeURIComponent(parsed.username) || 'postgres' }
}

/** The same server, another database: how tests and tools reach `postgres` or a scratch database. */
export function withDatabase(url: string, database: string): string {
  const parsed = new URL(url)
  parsed.pathname = `/${encodeURIComponent(database)}`
  return parsed.toString()
}

/** A URL safe to print: the password is masked. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url)
    if (parsed.password) parsed.password = '***'
    return parsed.toString()
  } catch {
    return '<unparseable URL>'
  }
}
