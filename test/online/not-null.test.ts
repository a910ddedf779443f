import { sql, type Kysely } from 'kysely'
import { beforeAll, describe, expect, it } from 'vitest'
import { takeSchemaSnapshot } from '../../src/catalog/schema-snapshot.ts'
import { notNull } from '../../src/online/not-null.ts'
import { blockLaws } from '../support/block-laws.ts'
import { useTestDatabase } from '../support/database.ts'

/** The notNull building block on a toy table: idempotent both ways, exact reverse, and never a real NOT NULL dropped. */
describe('online/not-null', () => {
  const t = useTestDatabase('empty')
  let db: Kysely<any>
  const isNotNull = async (column: string) =>
    (await sql<{ n: boolean }>`select attnotnull as n from pg_attribute where attrelid = 'toy'::regclass and attname = ${column}`.execute(db)).rows[0]!.n
  const checks = async () =>
    (await sql<{ c: string }>`select conname as c from pg_constraint where conrelid = 'toy'::regclass and contype = 'c' order by 1`.execute(db)).rows.map((r) => r.c)
  beforeAll(async () => {
    db = t.admin
    await sql`create table toy (id int primary key, v int not null, w int)`.execute(db)
    await sql`insert into toy values (1, 1, 1), (2, 2, 2)`.execute(db)
  })

  it('on a column that is already NOT NULL it changes nothing, on every major (18 names NOT NULL <table>_<column>_not_null)', async () => {
    const before = await takeSchemaSnapshot(db)
    const { rows } = await sql<{ n: number }>`select count(*)::int as n from pg_constraint where conrelid = 'toy'::regclass and conname = 'toy_v_not_null'`.execute(db)
    const version = Number((await sql<{ v: string }>`select current_setting('server_version_num') as v`.execute(db)).rows[0]!.v)
    // The case the guard is for: on 18 the real NOT NULL carries exactly the name of the step's CHECK.
    expect(rows[0]!.n).toBe(version >= 180000 ? 1 : 0)
    for (let run = 1; run <= 2; run++) {
      await notNull('toy', 'v').up(db)
      // Checked after each run: a second run would quietly put back a NOT NULL the first one dropped.
      expect(await isNotNull('v'), `after run ${run}`).toBe(true)
      expect(await takeSchemaSnapshot(db), `after run ${run}`).toEqual(before)
    }
  })

  it('up twice, down twice, up → down → up: same catalog each time, no CHECK left behind', async () => {
    const before = await takeSchemaSnapshot(db)
    const step = notNull('toy', 'w')
    await step.up(db)
    await step.up(db)
    expect(await isNotNull('w')).toBe(true)
    expect(await checks()).toEqual([])
    const applied = await takeSchemaSnapshot(db)
    await step.down(db)
    await step.down(db)
    expect(await isNotNull('w')).toBe(false)
    expect(await takeSchemaSnapshot(db)).toEqual(before)
    await step.up(db)
    expect(await takeSchemaSnapshot(db)).toEqual(applied)
    await step.down(db)
  })

  it('resumes from a CHECK a killed run left behind, validated or not', async () => {
    await sql`alter table toy add constraint toy_w_not_null check (w is not null) not valid`.execute(db)
    await notNull('toy', 'w').up(db)
    expect(await isNotNull('w')).toBe(true)
    expect(await checks()).toEqual([])
    await notNull('toy', 'w').down(db)
    await sql`alter table toy add constraint toy_w_not_null check (w is not null)`.execute(db)
    await notNull('toy', 'w').up(db)
    expect(await isNotNull('w')).toBe(true)
    expect(await checks()).toEqual([])
  })
})

blockLaws('online/not-null', {
  setup: async (db) => void (await sql`create table toy (id int primary key, w int); insert into toy values (1, 1), (2, 2)`.execute(db)),
  step: () => notNull('toy', 'w'),
})
