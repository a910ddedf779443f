import type { IncomingMessage, ServerResponse } from 'node:http'

/** A request the client can correct, answered with its status and `{ error }`: one line, no stack. */
export class HttpError extends Error {
  constructor(readonly status: number, message: string) {
    super(message)
  }
}

const MAX_BODY = 64 * 1024

/** The request's body as a JSON object; 400 for anything else (a client's mistake, not the server's). */
export async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  // Bytes first, decoded once whole: a character cut between two TCP chunks, decoded chunk by
  // chunk, was stored as U+FFFD (an outside review's "café").
  const chunks: Buffer[] = []
  let bytes = 0
  for await (const chunk of req) {
    bytes += (chunk as Buffer).length
    if (bytes > MAX_BODY) throw new HttpError(413, `the body is larger than ${MAX_BODY} bytes`)
    chunks.push(chunk as Buffer)
  }
  const text = Buffer.concat(chunks).toString('utf8')
  let body: unknown
  try {
    body = JSON.parse(text)
  } catch (error) {
    throw new HttpError(400, `the body is not JSON (${(error as Error).message.split('\n')[0]}): send e.g. {"name":"Acme"}`)
  }
  if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new HttpError(400, 'the body must be a JSON object, e.g. {"name":"Acme"}')
  return body as Record<string, unknown>
}

/** A string field of the body, trimmed; 400 naming the field when it is missing and required. */
export function field(body: Record<string, unknown>, name: string, required: true): string
export function field(body: Record<string, unknown>, name: string, required?: false): string | undefined
export function field(body: Record<string, unknown>, name: string, required = false): string | undefined {
  const value = body[name]
  if (value === undefined || value === null || value === '') {
    if (required) throw new HttpError(400, `"${name}" is missing from the body`)
    return undefined
  }
  if (typeof value !== 'string') throw new HttpError(400, `"${name}" must be a string`)
  // PostgreSQL's text holds neither a NUL nor half a surrogate pair: a client's mistake, not a 500.
  if (value.includes('\u0000') || /\p{Surrogate}/u.test(value)) throw new HttpError(400, `"${name}" holds a NUL or a lone surrogate (\\ud800–\\udfff), which text cannot store`)
  return value.trim()
}

export function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body)}\n`
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) })
  res.end(text)
}
