import { sql } from 'kysely'
import { policy } from '../../src/online/policy.ts'
import { blockLaws } from '../support/block-laws.ts'

blockLaws('online/policy', {
  setup: async (db) => void (await sql`create table toy (id int primary key, v int); alter table toy enable row level security`.execute(db)),
  step: ({ role }) => policy('toy', { name: 'toy_positive', to: async () => [role], condition: async () => sql`v > 0` }),
})
