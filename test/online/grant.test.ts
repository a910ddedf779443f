import { sql } from 'kysely'
import { grant } from '../../src/online/grant.ts'
import { blockLaws } from '../support/block-laws.ts'

blockLaws('online/grant', {
  setup: async (db) => void (await sql`create table toy (id int primary key)`.execute(db)),
  step: () => grant('toy', ['select', 'insert', 'update']),
  context: ({ role }) => ({ appRole: role }),
})
