import { Readable } from 'node:stream'
import { describe, expect, it } from 'vitest'
import { ndjsonLines } from '../src/tenant-admin/ndjson-lines.ts'

const linesOf = async (chunks: (string | Buffer)[], maxBytes?: number) => {
  const out: string[] = []
  for await (const line of ndjsonLines(Readable.from(chunks, { objectMode: false }), maxBytes)) out.push(line)
  return out
}

describe('ndjsonLines: the lines of a tenant export, as tenant import reads them', () => {
  it('splits at \\n across chunks, drops a \\r before it, keeps U+2028 and U+2029 inside a line, and gives a last line without \\n', async () => {
    expect(await linesOf(['{"a":1}\n{"b"', ':"x\u2028y\u2029z"}\r\n', '{"c":3}'])).toEqual(['{"a":1}', '{"b":"x\u2028y\u2029z"}', '{"c":3}'])
  })

  it('a character of several bytes cut between two chunks comes out whole', async () => {
    const bytes = Buffer.from('{"name":"Zoë ✓"}\n', 'utf8')
    const cut = bytes.indexOf(Buffer.from('✓', 'utf8')) + 1
    expect(await linesOf([bytes.subarray(0, cut), bytes.subarray(cut)])).toEqual(['{"name":"Zoë ✓"}'])
  })

  it('a line longer than the limit is refused, naming it, whether it ends or not (readline threw an uncatchable RangeError at 600 MB)', async () => {
    const long = 'x'.repeat(40)
    await expect(linesOf(['{"ok":1}\n', `${long}\n`], 32)).rejects.toThrow('line 2 of the file is longer than 32 bytes: it is not a row of a skills-db tenant export')
    await expect(linesOf(['{"ok":1}\n', long.slice(0, 20), long.slice(20)], 32)).rejects.toThrow('line 2 of the file is longer than 32 bytes')
    expect(await linesOf(['{"ok":1}\n', `${'x'.repeat(32)}\n`], 32)).toEqual(['{"ok":1}', 'x'.repeat(32)])
  })
})
