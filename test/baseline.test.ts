import { sql } from 'kysely'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { takeSchemaSnapshot } from '../src/catalog/schema-snapshot.ts'
import legacySchema from '../src/migrator/legacy-schema.json' with { type: 'json' }
import { migrateDown, migrateUp } from '../src/migrator/migrate.ts'
import { createTestDatabase, type TestDatabase } from './support/database.ts'
import { buildLegacyDatabase, LEGACY_ROWS } from '../fixtures/legacy.ts'

describe('0001_baseline', () => {
  let legacy: TestDatabase
  let baseline: TestDatabase
  beforeAll(async () => {
    ;[legacy, baseline] = await Promise.all([createTestDatabase('empty'), createTestDatabase('empty')])
    await buildLegacyDatabase(legacy.admin, { rows: false })
    const outcome = await migrateUp(baseline.admin)
    expect(outcome).toMatchObject({ status: 'applied', steps: [{ name: '0001_baseline', direction: 'Up' }] })
  })
  afterAll(async () => Promise.all([legacy?.close(), baseline?.close()]))

  it('creates exactly the schema the Drizzle-made production database has (catalog comparison)', async () => {
    const fromLegacySql = await takeSchemaSnapshot(legacy.admin)
    const fromBaseline = await takeSchemaSnapshot(baseline.admin)
    expect(Object.keys(fromBaseline)).toHaveLength(9)
    expect(fromBaseline).toEqual(fromLegacySql)
    // The snapshot that adoption verifies against is the same one.
    expect(fromBaseline).toEqual(legacySchema)
    expect(fromBaseline.skills!.columns).toContain("tags text[] not null default '{}'::text[]")
    expect(fromBaseline.usage_events!.indexes).toContain(
      'CREATE INDEX usage_events_created_at_idx ON public.usage_events USING btree (created_at)',
    )
  })

  it('down refuses to drop tables that hold rows, and removes the schema when forced', async () => {
    await sql.raw(LEGACY_ROWS).execute(baseline.admin)
    const refused = await migrateDown(baseline.admin)
    expect(refused.status).toBe('error')
    if (refused.status === 'error') {
      expect(refused.error.migration).toBe('0001_baseline')
      expect(refused.error.message).toMatch(/refusing to roll back: .*; allowDataLoss accepts the loss$/)
    }
    expect(await takeSchemaSnapshot(baseline.admin)).toEqual(legacySchema)
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from users`.execute(baseline.admin)
    expect(rows[0]!.n).toBe(2)

    const forced = await migrateDown(baseline.admin, { allowDataLoss: true })
    expect(forced).toMatchObject({ status: 'applied', steps: [{ name: '0001_baseline', direction: 'Down' }] })
    expect(await takeSchemaSnapshot(baseline.admin)).toEqual({})
  })
})
