import { sql } from 'kysely'
import { appendOnly } from '../../src/online/append-only.ts'
import { blockLaws } from '../support/block-laws.ts'

blockLaws('online/append-only', {
  setup: async (db) => void (await sql`create table toy (id int primary key)`.execute(db)),
  step: () => appendOnly('toy'),
})
