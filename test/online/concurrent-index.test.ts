import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { connectClient } from '../../src/connection/pg-client.ts'
import { index } from '../../src/online/concurrent-index.ts'
import { LockRetryExhausted } from '../../src/online/lock-retry.ts'
import { inRun } from '../../src/online/run-context.ts'
import { blockLaws } from '../support/block-laws.ts'
import { useTestDatabase } from '../support/database.ts'

blockLaws('online/concurrent-index', {
  setup: async (db) => void (await sql`create table toy (id int primary key, v int); insert into toy select g, g % 7 from generate_series(1, 100) g`.execute(db)),
  step: () => index({ table: 'toy', name: 'toy_v_idx', columns: ['v'] }),
})

blockLaws('online/concurrent-index (unique)', {
  setup: async (db) => void (await sql`create table toy (id int primary key, v int); insert into toy select g, g from generate_series(1, 100) g`.execute(db)),
  step: () => index({ table: 'toy', name: 'toy_v_key', columns: ['v', 'id'], unique: true }),
})

blockLaws('online/concurrent-index (descending, and in a collation of its own)', {
  setup: async (db) => void (await sql`create table toy (id int primary key, t text, v int); create collation skills_db.toy_c from "C";
    insert into toy select g, 't' || g, g from generate_series(1, 100) g`.execute(db)),
  step: () => ({
    name: 'two indexes',
    async up(db) {
      await index({ table: 'toy', name: 'toy_v_desc_idx', columns: ['t', 'v desc'] }).up(db)
      await index({ table: 'toy', name: 'toy_t_c_key', columns: ['t'], unique: true, collate: 'skills_db.toy_c' }).up(db)
    },
    async down(db) {
      await index({ table: 'toy', name: 'toy_t_c_key', columns: ['t'], unique: true, collate: 'skills_db.toy_c' }).down(db)
      await index({ table: 'toy', name: 'toy_v_desc_idx', columns: ['t', 'v desc'] }).down(db)
    },
  }),
})

blockLaws('online/concurrent-index (empty: it takes the name only)', {
  setup: async (db) => void (await sql`create table toy (id int primary key, t text); create collation skills_db.toy_c from "C";
    insert into toy select g, 't' || g from generate_series(1, 100) g`.execute(db)),
  step: () => index({ table: 'toy', name: 'toy_t_reserved', columns: ['t'], collate: 'skills_db.toy_c', empty: true }),
})

describe('online/concurrent-index: what it waits for', () => {
  const t = useTestDatabase('empty')

  it('an empty index holds no row, and a build of that name then finds it built', async () => {
    await sql`create table toy (id int primary key, t text); insert into toy select g, 't' || g from generate_series(1, 100) g`.execute(t.admin)
    await index({ table: 'toy', name: 'toy_t_idx', columns: ['t'], empty: true }).up(t.admin)
    const { rows } = await sql<{ def: string; pages: number }>`select pg_get_indexdef('toy_t_idx'::regclass) as def, (select relpages from pg_class where oid = 'toy_t_idx'::regclass) as pages`.execute(t.admin)
    expect(rows[0]!.def).toMatch(/USING btree \(t\) WHERE false$/)
    await index({ table: 'toy', name: 'toy_t_idx', columns: ['t'] }).up(t.admin)
    expect((await sql<{ def: string }>`select pg_get_indexdef('toy_t_idx'::regclass) as def`.execute(t.admin)).rows[0]!.def).toMatch(/WHERE false$/)
  })

  it('a transaction that never ends stops the build after the retry budget, naming its session; the rerun builds it once it is gone', { timeout: 60_000 }, async () => {
    await sql`create table toy2 (id int primary key, v int); insert into toy2 select g, g from generate_series(1, 100) g`.execute(t.admin)
    // An app's session holding a snapshot: CONCURRENTLY waits for it to end.
    const app = await connectClient({ connectionString: t.url, application_name: 'the snapshot holder' })
    await app.query('begin isolation level repeatable read; select count(*) from toy2')
    try {
      const started = Date.now()
      const build = inRun({ lockRetryBudgetMs: 1_000 }, () => index({ table: 'toy2', name: 'toy2_v_idx', columns: ['v'] }).up(t.admin))
      await expect(build).rejects.toThrow(LockRetryExhausted)
      await expect(build).rejects.toThrow(/gave up after 1 s on index toy2_v_idx: it waits for the transactions older than it to end, and these did not: pid \d+ \(the snapshot holder, idle in transaction, in a transaction since [\d:]+, begin isolation level repeatable read/)
      expect(Date.now() - started).toBeLessThan(20_000)
    } finally {
      await app.query('rollback')
      await app.end()
    }
    await index({ table: 'toy2', name: 'toy2_v_idx', columns: ['v'] }).up(t.admin)
    expect((await sql<{ valid: boolean }>`select indisvalid as valid from pg_index where indexrelid = 'toy2_v_idx'::regclass`.execute(t.admin)).rows[0]!.valid).toBe(true)
  })
})
