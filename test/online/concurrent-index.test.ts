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
