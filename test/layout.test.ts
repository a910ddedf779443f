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
 * never each other; the example app the library only, and the tests the example app (they drive it).
 */
const MAY_IMPORT: Record<string, string[]> = {
  src: ['src'],
  fixtures: ['src', 'fixtures'],
  test: ['src', 'fixtures', 'test', 'examples'],
  bench: ['src', 'fixtures', 'bench'],
  scripts: ['src', 'scripts'],
  examples: ['src', 'examples'],
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

/** The source without its comments (roughly: enough that a comment neither opens nor listens). */
function code(file: string): string {
  return readFileSync(path.join(ROOT, file), 'utf8').replace(/\/\*[\s\S]*?\*\//g, '').replace(/(^|[^:'"`])\/\/.*$/gm, '$1')
}

/**
 * The pg clients and pools `source` makes without an 'error' listener: per variable name, each
 * `new …Client(`/`new …Pool(` needs a `<name>.on('error'` of its own; one made without a name cannot
 * have one.
 */
function bareConnections(source: string): string[] {
  const bare: string[] = []
  const opened = new Map<string, string[]>()
  for (const m of source.matchAll(/(?:(?:const|let|var)\s+(\w+)(?:\s*:\s*[\w.<>]+)?\s*=\s*)?new\s+(?:\w+\.)*(?:Client|Pool)\s*(?:<[^>(]*>)?\(/g)) {
    if (m[1]) opened.set(m[1], [...(opened.get(m[1]) ?? []), m[0]])
    else bare.push(m[0])
  }
  for (const [name, opens] of opened) {
    const listeners = source.match(new RegExp(`\\b${name}\\.on\\(\\s*['"]error['"]`, 'g'))?.length ?? 0
    bare.push(...opens.slice(listeners))
  }
  for (const m of source.matchAll(/introspector\.connect\(|createKyselyDialect\(/g)) bare.push(m[0])
  return bare
}

/**
 * A pg client or pool with no 'error' listener crashes the process when the server closes one of
 * its connections while it is idle or still ending (pool.end() resolves before its sockets close,
 * so a scratch database dropped WITH (FORCE) right after can do it): CI once died that way in
 * codegen:verify, through the pool kysely-codegen's introspector makes for itself. Single clients
 * come from connectClient (src/connection/pg-client.ts), pools from createDb; this catches a stray.
 */
describe('layout: every connection the code opens has an error listener', () => {
  it('the check itself tells a bare client from one that listens', () => {
    expect(bareConnections(`const c = new pg.Client({})\nawait c.connect()`)).toEqual(['const c = new pg.Client('])
    expect(bareConnections(`const a = new Pool({})\nconst b = new pg.Client({})\nb.on('error', () => {})`)).toEqual(['const a = new Pool('])
    expect(bareConnections(`const c = new pg.Client({})\nc.on("error", noop)`)).toEqual([])
    expect(bareConnections(`await dialect.introspector.connect({ connectionString })`)).toEqual(['introspector.connect('])
    // One listener does not cover a second client of the same name, elsewhere in the file.
    expect(bareConnections(`const c = new pg.Client({})\nc.on('error', noop)\nconst c = new pg.Client({})`)).toEqual(['const c = new pg.Client('])
    expect(bareConnections(`const p = new pg.Pool<Row>({})`)).toEqual(['const p = new pg.Pool<Row>('])
    expect(bareConnections(`await new pg.Client({}).connect()`)).toEqual(['new pg.Client('])
  })

  for (const folder of ['src', 'fixtures', 'scripts', 'bench', 'test']) {
    it(`${folder}/ opens pg clients and pools only with an 'error' listener, and never through kysely-codegen's own pool`, () => {
      const files = sources(folder).filter((f) => f !== path.join('test', 'layout.test.ts'))
      expect(files.length).toBeGreaterThan(0)
      expect(files.flatMap((f) => bareConnections(code(f)).map((b) => `${f}: ${b}`))).toEqual([])
    })
  }
})
