import { sql } from 'kysely'
import { checkConstraint } from '../../src/online/check-constraint.ts'
import { blockLaws } from '../support/block-laws.ts'

blockLaws('online/check-constraint', {
  setup: async (db) => void (await sql`create table toy (id text primary key); insert into toy select 't' || g from generate_series(1, 50) g`.execute(db)),
  step: () => checkConstraint({ table: 'toy', name: 'toy_id_not_empty', condition: sql`id <> ''` }),
})
