import { promises as fs } from 'node:fs'
import path from 'node:path'
import { sql } from 'kysely'
import { FileMigrationProvider, Migrator, NO_MIGRATIONS } from 'kysely/migration'
import { describe, expect, inject, it } from 'vitest'
import { takeSchemaSnapshot } from '../src/catalog/schema-snapshot.ts'
import { MIGRATIONS_DIR } from '../src/migrator/migration-provider.ts'
import { skillsDbMigrator } from '../src/migrator/skills-db-migrator.ts'
import { useLegacyDatabases } from './support/database.ts'
import { ALL_MIGRATION_NAMES, CONTRACT_MIGRATION_NAMES, MIGRATION_NAMES } from './support/migration-names.ts'

const legacyDb = useLegacyDatabases()

describe('other migrators and skills-db\'s migrations', () => {
  it('Kysely\'s own Migrator pointed at the folder is stopped by the guard before any migration, and says what to run instead', async () => {
    const t = await legacyDb()
    const before = await takeSchemaSnapshot(t.admin)
    // (import: the test runner's own, which loads .ts files, as Node would load the built .js ones.)
    const raw = new Migrator({ db: t.admin, provider: new FileMigrationProvider({ fs, path, migrationFolder: MIGRATIONS_DIR, import: (file: string) => import(file) } as never) })
    const result = await raw.migrateToLatest()
    expect(String(result.error)).toMatch(/skills-db's migrations run only through skills-db's migrator.*skillsDbMigrator\(\)/)
    expect(result.results).toEqual([{ migrationName: '0000_use_the_skills_db_migrator', direction: 'Up', status: 'Error' }, ...ALL_MIGRATION_NAMES.map((migrationName) => ({ migrationName, direction: 'Up', status: 'NotExecuted' }))])
    // Only Kysely's bookkeeping appeared; skills-db then adopts the database all the same.
    expect(await takeSchemaSnapshot(t.admin, { exclude: ['kysely_migration', 'kysely_migration_lock'] })).toEqual(before)
    expect(await skillsDbMigrator({ appRole: inject('appRole') })(t.admin).migrateToLatest()).toMatchObject({ results: expect.arrayContaining([{ migrationName: MIGRATION_NAMES.at(-1), direction: 'Up', status: 'Success' }]) })
  })

  it('skillsDbMigrator() answers as Kysely\'s Migrator does: getMigrations, migrateTo down and up, migrateDown, errors', async () => {
    const t = await legacyDb()
    const migrator = skillsDbMigrator({ appRole: inject('appRole') })(t.admin)
    expect((await migrator.getMigrations()).map((m) => [m.name, m.executedAt])).toEqual(ALL_MIGRATION_NAMES.map((n) => [n, undefined]))
    const latest = await migrator.migrateToLatest()
    expect(latest.error).toBeUndefined()
    expect(latest.results!.map((r) => r.migrationName)).toEqual(MIGRATION_NAMES.slice(1)) // 0001 adopted, not run
    // Up to the contract phase, which waits for the operator (skills-db contract), as at boot.
    expect((await migrator.getMigrations()).filter((m) => m.executedAt instanceof Date).map((m) => m.name)).toEqual(MIGRATION_NAMES)
    expect(await migrator.migrateTo(CONTRACT_MIGRATION_NAMES[0]!)).toMatchObject({ error: expect.objectContaining({ message: expect.stringMatching(/belongs to the contract phase, which waits for the operator: apply it with migrateContract\(\)/) }) })

    // Rolled back in the order applied: latest applied 0011 to 0013 (and 0019, 0021) after 0009.
    expect(await migrator.migrateTo('0006_create_audit_logs')).toEqual({ results: [
      { migrationName: '0021_tenant_context_finish_request', direction: 'Down', status: 'Success' },
      { migrationName: '0019_tenant_context_per_session_challenge', direction: 'Down', status: 'Success' },
      { migrationName: '0013_one_tenant_until_open', direction: 'Down', status: 'Success' },
      { migrationName: '0012_app_role_limits', direction: 'Down', status: 'Success' },
      { migrationName: '0011_tamper_evident_audit', direction: 'Down', status: 'Success' },
      { migrationName: '0009_close_cross_tenant_oracles', direction: 'Down', status: 'Success' },
      { migrationName: '0008_session_bound_tenant_context', direction: 'Down', status: 'Success' },
      { migrationName: '0007_private_tenants_and_audit', direction: 'Down', status: 'Success' },
    ] })
    expect(await migrator.migrateTo('0007_private_tenants_and_audit')).toEqual({ results: [{ migrationName: '0007_private_tenants_and_audit', direction: 'Up', status: 'Success' }] })
    expect(await migrator.migrateDown()).toEqual({ results: [{ migrationName: '0007_private_tenants_and_audit', direction: 'Down', status: 'Success' }] })
    expect(await migrator.migrateTo('0042_nope')).toMatchObject({ error: expect.objectContaining({ message: expect.stringMatching(/unknown migration "0042_nope"/) }), results: [] })

    // A refused down is an error result naming the migration, as Kysely reports a failed one.
    await sql`insert into audit_logs (tenant_id, action) values ('default-tenant-000-0000-000000000000', 'kept')`.execute(t.admin)
    const refused = await migrator.migrateTo(NO_MIGRATIONS)
    expect(refused.error).toBeInstanceOf(Error)
    expect(String(refused.error)).toMatch(/dropping audit_logs deletes the audit trail/)
    expect(refused.results!.at(-1)).toEqual({ migrationName: '0006_create_audit_logs', direction: 'Down', status: 'Error' })
  })
})
