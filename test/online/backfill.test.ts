import { sql, type Kysely } from 'kysely'
import { describe, expect, it } from 'vitest'
import { createDb } from '../../src/connection/create-db.ts'
import { backfillNulls } from '../../src/online/backfill.ts'
import { inRun } from '../../src/online/run-context.ts'
import { Killed } from '../support/block-laws.ts'
import { useTestDatabase } from '../support/database.ts'

describe('online/backfill', () => {
  const t = useTestDatabase('empty')
  const nulls = async () => (await sql<{ n: number }>`select count(*)::int as n from toy where tenant is null`.execute(t.admin)).rows[0]!.n

  it('fills every NULL in batches of the run\'s size, reporting progress; a rerun writes nothing', async () => {
    await sql`create table toy (id text primary key, tenant text); insert into toy select lpad(g::text, 4, '0'), case when g % 3 = 0 then 'x' end from generate_series(1, 25) g`.execute(t.admin)
    const lines: string[] = []
    const updated = await inRun({ batchSize: 10, logger: { info: (m) => lines.push(m) } }, () => backfillNulls(t.admin, 'toy', 'tenant', 'd'))
    expect(updated).toBe(17)
    expect(await nulls()).toBe(0)
    expect(lines).toEqual(['  toy: backfilled 7 rows so far (up to id 0010)', '  toy: backfilled 14 rows so far (up to id 0020)', '  toy: backfilled 17 rows so far (up to id 0025)'])
    expect((await sql<{ n: number }>`select count(*)::int as n from toy where tenant = 'x'`.execute(t.admin)).rows[0]!.n).toBe(8)
    expect(await backfillNulls(t.admin, 'toy', 'tenant', 'd')).toBe(0)
  })

  it('killed between batches, it completes when run again, each batch committed on its own', async () => {
    await sql`drop table if exists toy; create table toy (id text primary key, tenant text); insert into toy select lpad(g::text, 4, '0'), null from generate_series(1, 30) g`.execute(t.admin)
    const victim = createDb<any>(t.url, { max: 1 })
    let sent = 0
    const killed: Kysely<any> = victim.withPlugin({
      transformQuery(args) {
        // The probe, then per batch (the lock timeout set and) the update: stop after the second batch.
        if (++sent > 5) throw new Killed('killed mid-backfill')
        return args.node
      },
      transformResult: async (args) => args.result,
    })
    await expect(inRun({ batchSize: 10 }, () => backfillNulls(killed, 'toy', 'tenant', 'd'))).rejects.toThrow(Killed)
    await victim.destroy()
    expect(await nulls()).toBe(10)
    expect(await inRun({ batchSize: 10 }, () => backfillNulls(t.admin, 'toy', 'tenant', 'd'))).toBe(10)
    expect(await nulls()).toBe(0)
  })
})
