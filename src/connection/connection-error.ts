import type { DatabaseTarget } from './database-url.ts'

/** A failure to reach or use the database, phrased as one line that says what to do. */
export class ConnectionError extends Error {
  /** Always `'ConnectionError'`, so a log line or a check of `error.name` tells it apart. */
  override name = 'ConnectionError'
}

interface PgLikeError {
  code?: string
  message?: string
  errors?: PgLikeError[]
}

/**
 * Maps a driver error from the first contact with the server to a one-line, actionable message.
 * Returns undefined for errors that are not about reaching the server.
 */
export function describeConnectionError(error: unknown, target: DatabaseTarget): string | undefined {
  const err = (error ?? {}) as PgLikeError
  const codes = [err.code, ...(err.errors ?? []).map((e) => e.code)]
  const where = `${target.host}:${target.port}`
  if (codes.some((c) => c === 'ECONNREFUSED' || c === 'EHOSTUNREACH' || c === 'ENETUNREACH' || c === 'ETIMEDOUT')) {
    return `cannot reach PostgreSQL at ${where}: is the server running, and are the host and port of the database URL right?`
  }
  if (codes.some((c) => c === 'ENOTFOUND' || c === 'EAI_AGAIN')) {
    return `cannot resolve host "${target.host}" of the database URL`
  }
  if (err.code === '28P01' || err.code === '28000') {
    return `PostgreSQL at ${where} rejected user "${target.user}": check the user name and password of the database URL`
  }
  if (err.code === '3D000') {
    return `database "${target.database}" does not exist on ${where}: create it with  createdb -h ${target.host} -p ${target.port} -U ${target.user} ${target.database}`
  }
  if (err.code === '57P03') return `PostgreSQL at ${where} is starting up or shutting down: try again in a moment`
  if (/timeout expired|Connection terminated due to connection timeout/i.test(err.message ?? '')) {
    return `timed out connecting to PostgreSQL at ${where}: is the host reachable?`
  }
  return undefined
}
