import { SchemaMismatchError } from '../src/migrator/legacy-adoption.ts'
import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { sql } from 'kysely'
import { afterAll, describe, expect, inject, it } from 'vitest'
import { takeSchemaSnapshot } from '../src/catalog/schema-snapshot.ts'
import { migrateToLatest } from '../src/migrator/migrate.ts'
import { MIGRATIONS_DIR } from '../src/migrator/migration-provider.ts'
import { createTestDatabase, type TestDatabase } from './support/database.ts'
import { buildLegacyDatabase, rowDigests } from '../fixtures/legacy.ts'

const appRole = inject('appRole')

describe('wrong targets and broken migrations are refused, nothing changed', () => {
  const dbs: TestDatabase[] = []
  const dirs: string[] = []
  const fresh = async () => {
    const d = await createTestDatabase('empty')
    dbs.push(d)
    return d
  }
  afterAll(async () => {
    await Promise.all(dbs.map((d) => d.close()))
    for (const d of dirs) rmSync(d, { recursive: true, force: true })
  })
  const schemas = (t: TestDatabase) => sql<{ n: string }>`select nspname as n from pg_namespace where nspname not like 'pg\\_%' and nspname <> 'information_schema' order by 1`.execute(t.admin).then((r) => r.rows.map((x) => x.n))

  it('a read-only server', async () => {
    const t = await fresh()
    await buildLegacyDatabase(t.admin)
    await sql`alter database ${sql.id(t.name)} set default_transaction_read_only = on`.execute(t.admin)
    const ro = (await import('../src/connection/create-db.ts')).createDb<any>(t.url, { max: 1 })
    try {
      const before = await takeSchemaSnapshot(ro)
      const outcome = await migrateToLatest(ro, { appRole })
      expect(outcome).toMatchObject({ status: 'error', steps: [], error: { kind: 'preflight', message: 'the database is read-only (default_transaction_read_only is on): nothing was changed; point the migrator at the writable primary' } })
      expect(await takeSchemaSnapshot(ro)).toEqual(before)
      expect(await schemas(t)).toEqual(['drizzle', 'public'])
    } finally {
      await ro.destroy()
    }
  })

  it('a database that is neither the legacy schema nor any migration state', async () => {
    const t = await fresh()
    await sql`create table orders (id serial primary key, total numeric)`.execute(t.admin)
    const outcome = await migrateToLatest(t.admin, { appRole })
    expect(outcome.status).toBe('error')
    expect(outcome).toMatchObject({ status: 'error', error: { kind: 'schema-mismatch', cause: expect.any(SchemaMismatchError) } })
    expect(outcome.status === 'error' && outcome.error.message).toMatch(/not the legacy schema .*Nothing was changed/)
    expect(outcome.status === 'error' && outcome.error.details).toContain('table orders: unexpected')
    expect(await schemas(t)).toEqual(['public'])
  })

  it.each([
    ['a syntax error', 'export async function up(db) { this is not javascript }', /^migration 0007_broken\.ts failed to load: /],
    ['no up', 'export async function down() {}', /migration 0007_broken does not export an up\(db\) function/],
  ])('a migration file with %s: named, and nothing runs', async (_label, source, message) => {
    const t = await fresh()
    await buildLegacyDatabase(t.admin)
    // Beside src/migrations, so the copies' relative imports of the building blocks resolve.
    const dir = mkdtempSync(path.join(MIGRATIONS_DIR, '..', '.test-migrations-'))
    dirs.push(dir)
    cpSync(MIGRATIONS_DIR, dir, { recursive: true })
    writeFileSync(path.join(dir, '0007_broken.ts'), source)
    const rows = await rowDigests(t.admin)
    const outcome = await migrateToLatest(t.admin, { appRole, migrationsDir: dir })
    expect(outcome).toMatchObject({ status: 'error', steps: [], error: { kind: 'invalid-migration', message: expect.stringMatching(message) } })
    expect(await rowDigests(t.admin)).toEqual(rows)
    expect((await sql<{ t: string | null }>`select to_regclass('tenants')::text as t`.execute(t.admin)).rows[0]!.t).toBeNull()
  })
})
