import { sql, type Kysely, type Transaction } from 'kysely'
import { beforeAll, describe, expect, inject, it } from 'vitest'
import type { DB } from '../src/db-types.ts'
import { withTenant } from '../src/tenancy/with-tenant.ts'
import { useTestDatabase } from './support/database.ts'
import { describeInjectionSuite, onTestDatabase } from './support/injection-suite.ts'
import { A, B, seedTwoTenants } from './support/tenants.ts'

describe('the injection suite, on the expand schema', () => {
  const t = useTestDatabase('migrated')
  let app: Kysely<DB>
  beforeAll(async () => {
    await seedTwoTenants(t.admin)
    app = t.connectAs(inject('appRole'), 'test', 1)
  })
  describeInjectionSuite(onTestDatabase(t, () => app))
})

describe('EXPLAIN inside tenant A\'s withTenant tells nothing of B\'s values', () => {
  const t = useTestDatabase('migrated')
  let app: Kysely<DB>
  beforeAll(async () => {
    await seedTwoTenants(t.admin)
    // Enough rows for statistics to matter, and B's slugs where A's are not.
    await sql.raw(`insert into skills (id, tenant_id, name, slug, description, category, content, total_uses)
        select 'sa' || g, '${A}', 'n', 'a-' || lpad(g::text, 4, '0'), 'd', 'c', 'c', g from generate_series(1, 2000) g;
      insert into skills (id, tenant_id, name, slug, description, category, content, total_uses)
        select 'sb' || g, '${B}', 'n', 'b-' || lpad(g::text, 4, '0'), 'd', 'c', 'c', 10000 + g from generate_series(1, 2000) g;
      analyze skills`).execute(t.admin)
    app = t.connectAs(inject('appRole'), 'test', 1)
  })
  const estimate = (trx: Transaction<DB>, condition: ReturnType<typeof sql>) =>
    sql<{ 'QUERY PLAN': [{ Plan: { 'Plan Rows': number } }] }>`explain (format json) select 1 from skills where ${condition}`.execute(trx)
      .then((r) => r.rows[0]!['QUERY PLAN'][0].Plan['Plan Rows'])

  it('estimates of a content column do not move with guesses about B\'s values (no statistics kept for it)', async () => {
    const seen = await withTenant(app, A, async (trx) => ({
      below: await estimate(trx, sql`slug < ${'b-0001'}`),
      middle: await estimate(trx, sql`slug < ${'b-1000'}`),
      above: await estimate(trx, sql`slug < ${'b-9999'}`),
    }))
    expect(new Set(Object.values(seen)).size).toBe(1)
    const { rows } = await sql`select attname from pg_stats where tablename = 'skills' and attname in ('slug', 'name', 'description', 'content', 'category', 'tags', 'status')`.execute(t.admin)
    expect(rows).toEqual([])
  })

  it('nor with guesses about B\'s numbers: no column keeps statistics since the open phase (test/side-channels.test.ts probes every one)', async () => {
    const seen = await withTenant(app, A, async (trx) => ({
      low: await estimate(trx, sql`total_uses < ${10_001}`),
      high: await estimate(trx, sql`total_uses < ${11_000}`),
    }))
    expect(seen.high).toBe(seen.low)
    // The probe has teeth: with the statistics back, the estimates move with B's numbers.
    await sql`alter table skills alter column total_uses set statistics 100; analyze skills`.execute(t.admin)
    const again = await withTenant(app, A, async (trx) => ({
      low: await estimate(trx, sql`total_uses < ${10_001}`),
      high: await estimate(trx, sql`total_uses < ${11_000}`),
    }))
    expect(again.high).toBeGreaterThan(again.low)
  })
})
