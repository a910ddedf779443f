import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { withoutStatistics } from '../../src/online/statistics.ts'
import { blockLaws } from '../support/block-laws.ts'
import { useTestDatabase } from '../support/database.ts'

/** A table whose columns have targets of every kind, one a policy reads (its type cannot change under the policy). */
const setup = async (db: Parameters<Parameters<typeof blockLaws>[1]['setup']>[0]) =>
  void (await sql`create table toy (tenant_id text not null, id int, note text, primary key (tenant_id, id));
    alter table toy alter column note set statistics 0, alter column id set statistics 50;
    alter table toy enable row level security;
    create policy toy_tenant on toy as restrictive for select to public using (tenant_id = current_user);
    insert into toy select 't' || (g % 3), g, 'n' || g from generate_series(1, 200) g; analyze toy`.execute(db))

blockLaws('online/statistics', { setup, step: () => withoutStatistics('toy') })

describe('online/statistics: what was collected goes, and comes back with down', () => {
  const t = useTestDatabase('empty')
  it('no column keeps statistics after up; down gives each its target back and analyzes', async () => {
    await sql`create schema if not exists skills_db`.execute(t.admin)
    await setup(t.admin)
    const collected = async () => (await sql<{ c: string }>`select attname as c from pg_stats where tablename = 'toy' order by 1`.execute(t.admin)).rows.map((r) => r.c)
    expect(await collected()).toEqual(['id', 'tenant_id'])
    await withoutStatistics('toy').up(t.admin)
    expect(await collected()).toEqual([])
    await sql`analyze toy`.execute(t.admin)
    expect(await collected()).toEqual([])
    await withoutStatistics('toy').down(t.admin)
    expect(await collected()).toEqual(['id', 'tenant_id'])
  })
})
