import { sql } from 'kysely'
import { afterAll, describe, expect, it } from 'vitest'
import { takeSchemaSnapshot } from '../src/catalog/schema-snapshot.ts'
import { migrateToLatest } from '../src/migrator/migrate.ts'
import { migrationStatus } from '../src/migrator/migration-status.ts'
import { createTestDatabase, type TestDatabase } from './support/database.ts'
import { buildLegacyDatabase, rowDigests } from '../fixtures/legacy.ts'
import { GATED_MIGRATION_NAMES } from './support/migration-names.ts'

describe('adopting the existing production database', () => {
  let dbs: TestDatabase[] = []
  const fresh = async () => {
    const d = await createTestDatabase('empty')
    dbs.push(d)
    return d
  }
  afterAll(async () => Promise.all(dbs.map((d) => d.close())))

  it('records 0001 without running it, keeps every row, then migrates on', async () => {
    const t = await fresh()
    await buildLegacyDatabase(t.admin)
    const before = await rowDigests(t.admin)
    const oids = await sql<{ relname: string; oid: number }>`
      select relname, oid::int from pg_class where relnamespace = 'public'::regnamespace and relkind = 'r' order by 1`.execute(t.admin)

    const logs: string[] = []
    const outcome = await migrateToLatest(t.admin, { logger: { info: (m) => logs.push(m) }, appRole: `${t.name}_app` })
    expect(outcome.status).not.toBe('error')
    expect(outcome.status !== 'error' && outcome.adopted).toBe(true)
    expect(outcome.steps.map((s) => s.name)).not.toContain('0001_baseline')
    expect(logs.join('\n')).toMatch(/0001_baseline recorded as applied \(not run\)/)
    expect(logs.join('\n')).not.toMatch(/up +0001_baseline/)

    // Same tables (same oids: nothing was dropped and re-created), same rows, Drizzle's history kept.
    const after = await sql<{ relname: string; oid: number }>`
      select relname, oid::int from pg_class where relnamespace = 'public'::regnamespace and relkind = 'r' and relname = any(${oids.rows.map((r) => r.relname)}) order by 1`.execute(t.admin)
    expect(after.rows).toEqual(oids.rows)
    expect(await rowDigests(t.admin)).toEqual(before)
    const drizzle = await sql<{ n: number }>`select count(*)::int as n from drizzle.__drizzle_migrations`.execute(t.admin)
    expect(drizzle.rows[0]!.n).toBe(2)
    const status = await migrationStatus(t.admin)
    expect(status.applied[0]!.name).toBe('0001_baseline')
    expect(status.pending).toEqual(GATED_MIGRATION_NAMES)
    await sql`drop role if exists ${sql.id(`${t.name}_app`)}`.execute(t.admin).catch(() => {})
  })

  it('refuses a database whose schema differs, with a report, and changes nothing', async () => {
    const t = await fresh()
    await buildLegacyDatabase(t.admin)
    await sql`alter table skills alter column description drop not null`.execute(t.admin)
    await sql`alter table users add column nickname text`.execute(t.admin)
    const before = await takeSchemaSnapshot(t.admin)
    const rowsBefore = await rowDigests(t.admin)

    const outcome = await migrateToLatest(t.admin)
    expect(outcome.status).toBe('error')
    if (outcome.status !== 'error') return
    expect(outcome.error.message).toMatch(/not the legacy schema \(3 differences, first: .*Nothing was changed/)
    expect(outcome.error.details).toEqual([
      'table skills: columns missing  description text not null',
      'table skills: columns unexpected  description text',
      'table users: columns unexpected  nickname text',
    ])

    expect(await takeSchemaSnapshot(t.admin)).toEqual(before)
    expect(await rowDigests(t.admin)).toEqual(rowsBefore)
    const schema = await sql<{ n: number }>`select count(*)::int as n from pg_namespace where nspname = 'skills_db'`.execute(t.admin)
    expect(schema.rows[0]!.n).toBe(0)
  })
})
