import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { countsAt, fillProductionCopy } from '../fixtures/production-copy.ts'
import { startOldApp } from '../fixtures/old-app.ts'
import { migrateToLatest } from '../src/migrator/migrate.ts'
import { TENANT_TABLES } from '../fixtures/legacy.ts'
import { inject } from 'vitest'
import { useTestDatabase } from './support/database.ts'
import { LEGACY_SQL } from '../fixtures/legacy.ts'

describe('migrating while the single-tenant app writes', () => {
  const t = useTestDatabase('empty')

  it('completes; the app gets no error; every acknowledged row is there, with a tenant', async () => {
    const counts = countsAt(0.02) // 20k usage_events
    await sql.raw(LEGACY_SQL).execute(t.admin)
    await fillProductionCopy(t.admin, counts)

    const app = startOldApp(t.url, { connections: 3, skills: counts.skills, users: counts.users, maxMs: 120_000 })
    await new Promise((r) => setTimeout(r, 500))
    const outcome = await migrateToLatest(t.admin, { appRole: inject('appRole') })
    await new Promise((r) => setTimeout(r, 500))
    await app.stop()

    expect(outcome.status, JSON.stringify(outcome)).toBe('applied')
    const errors = app.samples.filter((s) => s.error).map((s) => s.error)
    expect(errors).toEqual([])
    expect(app.acknowledged.length).toBeGreaterThan(50)
    const { rows } = await sql<{ id: string; tenant_id: string | null }>`
      select id, tenant_id from usage_events where id = any(${app.acknowledged})`.execute(t.admin)
    expect(rows).toHaveLength(app.acknowledged.length)
    const { rows: tenant } = await sql<{ id: string }>`select id from tenants where slug = 'default'`.execute(t.admin)
    expect(new Set(rows.map((r) => r.tenant_id))).toEqual(new Set([tenant[0]!.id]))
    for (const table of TENANT_TABLES) {
      const { rows: n } = await sql<{ n: number }>`select count(*)::int as n from ${sql.table(table)} where tenant_id is null`.execute(t.admin)
      expect(n[0]!.n, table).toBe(0)
    }
    // The app's every kind of statement went on succeeding after the migration too.
    const lastOps = new Set(app.samples.slice(-40).map((s) => s.op))
    expect(lastOps).toEqual(new Set(['insert_event', 'bump_uses', 'upsert_rating', 'select_slug']))
  })
})
