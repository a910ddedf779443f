import { readdirSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { MIGRATIONS_DIR } from '../src/migrator/migration-provider.ts'

const MIGRATIONS = readdirSync(MIGRATIONS_DIR).filter((f) => /^\d{4}_.*\.ts$/.test(f)).sort()

/** What a migration may import: Kysely and the schema-free building blocks (see src/migrations/README.md). */
const ALLOWED = [/^kysely$/, /^\.\.\/online\/[a-z-]+\.ts$/]

describe('migrations are frozen: they import machinery, never the facts of the runtime', () => {
  it.each(MIGRATIONS)('%s', (file) => {
    const source = readFileSync(path.join(MIGRATIONS_DIR, file), 'utf8')
    const imports = [...source.matchAll(/^import .* from '([^']+)'/gm)].map((m) => m[1]!)
    expect(imports.length).toBeGreaterThan(0)
    expect(imports.filter((i) => !ALLOWED.some((re) => re.test(i)))).toEqual([])
  })
})
