import { sql } from 'kysely'
import { addColumn } from '../../src/online/add-column.ts'
import { blockLaws } from '../support/block-laws.ts'

blockLaws('online/add-column', {
  setup: async (db) => void (await sql`create table toy (id int primary key); insert into toy values (1), (2)`.execute(db)),
  step: () => addColumn({ table: 'toy', column: 'tenant', type: 'text', existingRows: async () => sql`'old'`, newRows: async () => sql`'new'` }),
})
