import { sql } from 'kysely'
import { rowSecurity } from '../../src/online/row-security.ts'
import { blockLaws } from '../support/block-laws.ts'

blockLaws('online/row-security', {
  setup: async (db) => void (await sql`create table toy (id int primary key, v int)`.execute(db)),
  step: ({ role }) => rowSecurity('toy', [
    { name: 'toy_positive', condition: sql`v > 0`, to: async () => [role] },
    { name: 'toy_nobody', condition: sql`false`, to: async () => [] },
  ]),
})
