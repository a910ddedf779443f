import { sql } from 'kysely'
import { index } from '../../src/online/concurrent-index.ts'
import { blockLaws } from '../support/block-laws.ts'

blockLaws('online/concurrent-index', {
  setup: async (db) => void (await sql`create table toy (id int primary key, v int); insert into toy select g, g % 7 from generate_series(1, 100) g`.execute(db)),
  step: () => index({ table: 'toy', name: 'toy_v_idx', columns: ['v'] }),
})

blockLaws('online/concurrent-index (unique)', {
  setup: async (db) => void (await sql`create table toy (id int primary key, v int); insert into toy select g, g from generate_series(1, 100) g`.execute(db)),
  step: () => index({ table: 'toy', name: 'toy_v_key', columns: ['v', 'id'], unique: true }),
})
