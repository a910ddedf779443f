import { cpSync, mkdtempSync, rmSync } from 'node:fs'
import path from 'node:path'
import { Readable, Writable } from 'node:stream'
import { sql } from 'kysely'
import { afterAll, describe, expect, inject, it } from 'vitest'
import { migrateDown, migrateOpen, migrateToLatest } from '../src/migrator/migrate.ts'
import { MIGRATIONS_DIR } from '../src/migrator/migration-provider.ts'
import { deleteTenant } from '../src/tenant-admin/delete-tenant.ts'
import { exportTenant } from '../src/tenant-admin/export-tenant.ts'
import { importTenant } from '../src/tenant-admin/import-tenant.ts'
import { TABLES_UNCHANGED } from '../src/tenant-admin/migrations-without-table-changes.ts'
import { asSuperuser, useLegacyDatabases } from './support/database.ts'
import { TEST_TENANT_KEY } from './support/tenant-key.ts'
import { A, B, seedTwoTenants } from './support/tenants.ts'

// A tenant export names the migrations applied where it was taken, and import asks for the same,
// except for those that change no table (migrations-without-table-changes.ts): an export from
// before such a migration imports after it, and one from after imports before (its down).
const legacyDb = useLegacyDatabases()
const dirs: string[] = []
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })))

describe('a tenant export across a migration that changes no table', () => {
  it.each([...TABLES_UNCHANGED])('%s: exported before it, imported after it; exported after it, imported once it is undone', async (name) => {
    const d = await legacyDb()
    const options = { appRole: inject('appRole'), tenantKeys: [TEST_TENANT_KEY], allowOldAppSessions: true, timestampsAreUtc: true }
    // The folder as it was before the migration was written.
    const before = mkdtempSync(path.join(MIGRATIONS_DIR, '..', '.test-migrations-'))
    dirs.push(before)
    cpSync(MIGRATIONS_DIR, before, { recursive: true, filter: (f) => !/^\d{4}_/.test(path.basename(f)) || path.basename(f).slice(0, -3) < name })
    expect(await migrateToLatest(d.admin, { ...options, migrationsDir: before })).toMatchObject({ status: 'applied' })
    expect(await migrateOpen(d.admin, { ...options, migrationsDir: before })).toMatchObject({ status: 'applied' })
    await seedTwoTenants(d.admin)
    const skillsOf = async (tenant: string) => (await sql<{ id: string }>`select id from skills where tenant_id = ${tenant} order by id`.execute(d.admin)).rows.map((r) => r.id)
    const kept = await skillsOf(A)
    expect(kept.length).toBeGreaterThan(0)
    const exported = async () => {
      const chunks: Buffer[] = []
      await asSuperuser(d.url, (db) => exportTenant(db, A, new Writable({ write(chunk, _e, done) { chunks.push(Buffer.from(chunk)); done() } })))
      return Buffer.concat(chunks)
    }
    const roundTrip = async (file: Buffer) => {
      await sql`update tenants set is_active = false where id = ${A}`.execute(d.admin)
      await asSuperuser(d.url, (db) => deleteTenant(db, A))
      expect(await skillsOf(A)).toEqual([])
      await asSuperuser(d.url, (db) => importTenant(db, () => Readable.from([file]), { allowUnconfinedSessions: true }))
      expect(await skillsOf(A)).toEqual(kept)
    }

    const fromBefore = await exported()
    expect(JSON.parse(fromBefore.toString('utf8').split('\n')[0]!).migrations).not.toContain(name)
    expect(await migrateToLatest(d.admin, options)).toMatchObject({ status: 'applied', steps: [{ name }] })
    await roundTrip(fromBefore)

    const fromAfter = await exported()
    expect(JSON.parse(fromAfter.toString('utf8').split('\n')[0]!).migrations).toContain(name)
    expect(await migrateDown(d.admin)).toMatchObject({ status: 'applied', steps: [{ name }] })
    await roundTrip(fromAfter)
    // B untouched throughout.
    expect((await skillsOf(B)).length).toBeGreaterThan(0)
  })
})
