import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { analyzed } from '../../src/online/analyze.ts'
import { useTestDatabase } from '../support/database.ts'

// Statistics are not schema: up gathers them (again on a rerun), down has nothing to undo.
describe('online/analyze', () => {
  const t = useTestDatabase('empty')

  it('gathers statistics of each table, again on a rerun; down leaves them', async () => {
    await sql`create table toy (id int primary key, v int); create table toy2 (id int primary key);
      insert into toy select g, g % 5 from generate_series(1, 200) g; insert into toy2 values (1)`.execute(t.admin)
    const analyzedAt = async () => (await sql<{ relname: string; n: number }>`select relname, analyze_count::int as n from pg_stat_user_tables
      where relname in ('toy', 'toy2') order by 1`.execute(t.admin)).rows
    const stats = async () => (await sql<{ n: number }>`select count(*)::int as n from pg_stats where tablename = 'toy'`.execute(t.admin)).rows[0]!.n
    const step = analyzed(['toy', 'toy2'])
    await step.up(t.admin)
    expect(await stats()).toBeGreaterThan(0)
    // The statistics collector reports asynchronously: poll for what both ANALYZEs left.
    await expect.poll(analyzedAt, { timeout: 10_000 }).toEqual([{ relname: 'toy', n: 1 }, { relname: 'toy2', n: 1 }])
    await step.up(t.admin)
    await expect.poll(analyzedAt, { timeout: 10_000 }).toEqual([{ relname: 'toy', n: 2 }, { relname: 'toy2', n: 2 }])
    await step.down(t.admin)
    expect(await stats()).toBeGreaterThan(0)
  })

  it('refuses a table name that is not a plain identifier before running anything', () => {
    expect(() => analyzed(['toy; drop table toy'])).toThrow(/is not a plain lower-case SQL identifier/)
  })
})
