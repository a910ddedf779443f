import { readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { ROOT } from './support/cli.ts'

/** Every .ts file under `dir` (a folder of the repository), recursively. */
function sources(dir: string): string[] {
  // (Dot folders are scratch: the copies of src/migrations that tests make.)
  return readdirSync(path.join(ROOT, dir), { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.ts') && !f.split(path.sep).some((part) => part.startsWith('.'))).map((f) => path.join(dir, f))
}

/** The repository folders a file's relative imports (static and dynamic) reach. */
function foldersImported(file: string): string[] {
  const source = readFileSync(path.join(ROOT, file), 'utf8')
  const specs = [...source.matchAll(/(?:from\s+|import\s*\(\s*|^import\s+)'(\.[^']+)'/gm)].map((m) => m[1]!)
  return [...new Set(specs.map((s) => path.relative(ROOT, path.resolve(ROOT, path.dirname(file), s)).split(path.sep)[0]!))]
}

/**
 * Who may import whom: the library imports only itself; the fixtures (legacy schema, production
 * copy, app loads, test server) the library; tests and the bench the library and the fixtures,
 * never each other.
 */
const MAY_IMPORT: Record<string, string[]> = {
  src: ['src'],
  fixtures: ['src', 'fixtures'],
  test: ['src', 'fixtures', 'test'],
  bench: ['src', 'fixtures', 'bench'],
  scripts: ['src', 'scripts'],
}

describe('layout: the folders import only what they may', () => {
  for (const [folder, allowed] of Object.entries(MAY_IMPORT)) {
    it(`${folder}/ imports only ${allowed.join(', ')}`, () => {
      const files = sources(folder)
      expect(files.length).toBeGreaterThan(0)
      const stray = files.flatMap((f) => foldersImported(f).filter((d) => !allowed.includes(d)).map((d) => `${f} → ${d}/`))
      expect(stray).toEqual([])
    })
  }
})

/**
 * A pg client or pool with no 'error' listener crashes the process when the server closes one of
 * its connections while it is idle or still ending (pool.end() resolves before its sockets close,
 * so a scratch database dropped WITH (FORCE) right after can do it): CI once died that way in
 * codegen:verify, through the pool kysely-codegen's introspector makes for itself.
 */
describe('layout: every connection the code opens has an error listener', () => {
  for (const folder of ['src', 'fixtures', 'scripts', 'bench']) {
    it(`${folder}/ opens pg clients and pools only with an 'error' listener, and never through kysely-codegen's own pool`, () => {
      const files = sources(folder)
      expect(files.length).toBeGreaterThan(0)
      const bare = files.filter((f) => {
        const source = readFileSync(path.join(ROOT, f), 'utf8')
        const opens = /new pg\.(Client|Pool)\(/.test(source)
        return /introspector\.connect\(/.test(source) || (opens && !/\.on\('error'/.test(source))
      })
      expect(bare).toEqual([])
    })
  }
})
