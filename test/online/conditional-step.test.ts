import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { index } from '../../src/online/concurrent-index.ts'
import { where } from '../../src/online/conditional-step.ts'
import { inRun } from '../../src/online/run-context.ts'
import { applySteps, reverse } from '../../src/online/step.ts'
import { blockLaws, catalogState } from '../support/block-laws.ts'
import { useTestDatabase } from '../support/database.ts'

const exists = (name: string) => async (db: Parameters<Parameters<typeof where>[1]>[0]) =>
  (await sql`select 1 from pg_class where oid = to_regclass(${name}::text)`.execute(db)).rows.length > 0
const dropToyIndex = () => where('drop toy_v_idx', exists('toy_v_idx'), [reverse(index({ table: 'toy', name: 'toy_v_idx', columns: ['v'] }))])

blockLaws('online/conditional-step (where it applies)', {
  setup: async (db) => void (await sql`create table toy (id int primary key, v int); create index toy_v_idx on toy (v)`.execute(db)),
  step: dropToyIndex,
})

describe('online/conditional-step (where it does not apply)', () => {
  const t = useTestDatabase('empty')
  it('up and down change nothing, and record nothing', async () => {
    await sql`create schema if not exists skills_db; create table toy (id int primary key, v int)`.execute(t.admin)
    const before = await catalogState(t.admin)
    // The run says it was not needed, rather than listing it as done.
    const lines: string[] = []
    await inRun({ logger: { info: (line) => lines.push(line) } }, () => applySteps(t.admin, [dropToyIndex()]))
    expect(lines).toEqual([expect.stringMatching(/^  remove index toy_v_idx: not needed here \(\d+ ms\)$/)])
    expect(await catalogState(t.admin)).toEqual(before)
    // Created since: down leaves it, as up did not drop it.
    await sql`create index toy_v_idx on toy (v)`.execute(t.admin)
    const later = await catalogState(t.admin)
    await dropToyIndex().down(t.admin)
    expect(await catalogState(t.admin)).toEqual(later)
  })
})
