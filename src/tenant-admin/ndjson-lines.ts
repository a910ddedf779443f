import type { Readable } from 'node:stream'
import { TenantAdminError } from './operator-session.ts'

/** Longer than any row of an export (PostgreSQL's own limit for a value is 1 GB, but no tenant table holds one near this), and well under a JavaScript string's limit. */
export const MAX_LINE_BYTES = 256 * 1024 * 1024

/**
 * The lines of an NDJSON file: UTF-8, split at each \n (a \r before it dropped), as readline gives
 * them, but a line longer than `maxBytes` is refused with one line that says so. readline would
 * grow it into a string past JavaScript's limit and throw a RangeError outside any await, which
 * nothing can catch (an outside review fed `tenant import` a 600 MB line and got a stack trace).
 */
export async function* ndjsonLines(input: Readable, maxBytes = MAX_LINE_BYTES): AsyncGenerator<string, void, undefined> {
  let pending: Buffer[] = []
  let pendingBytes = 0
  let lineNo = 0
  const tooLong = () => new TenantAdminError(`line ${lineNo + 1} of the file is longer than ${maxBytes >= 1024 * 1024 ? `${maxBytes / (1024 * 1024)} MB` : `${maxBytes} bytes`}: it is not a row of a skills-db tenant export`)
  const text = (line: Buffer) => {
    lineNo++
    const s = line.toString('utf8')
    return s.endsWith('\r') ? s.slice(0, -1) : s
  }
  for await (const chunk of input) {
    const buf = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : (chunk as Buffer)
    let start = 0
    for (let nl = buf.indexOf(0x0a, start); nl >= 0; nl = buf.indexOf(0x0a, start)) {
      const piece = buf.subarray(start, nl)
      if (pendingBytes + piece.length > maxBytes) throw tooLong()
      const line = pending.length > 0 ? Buffer.concat([...pending, piece]) : piece
      pending = []
      pendingBytes = 0
      start = nl + 1
      yield text(line)
    }
    if (start < buf.length) {
      pendingBytes += buf.length - start
      if (pendingBytes > maxBytes) throw tooLong()
      pending.push(buf.subarray(start))
    }
  }
  if (pendingBytes > 0) yield text(Buffer.concat(pending))
}
