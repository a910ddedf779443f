import { sql } from 'kysely'
import { swapPrimaryKey, uniqueKey } from '../../src/online/unique-key.ts'
import { blockLaws } from '../support/block-laws.ts'

const setup = async (db: Parameters<Parameters<typeof blockLaws>[1]['setup']>[0]) =>
  void (await sql`create table toy (id int primary key, t text not null, v int); insert into toy select g, 't' || (g % 3), g from generate_series(1, 50) g`.execute(db))

blockLaws('online/unique-key', {
  setup,
  step: () => uniqueKey({ table: 'toy', name: 'toy_t_v_unique', columns: ['t', 'v'] }),
})

blockLaws('online/unique-key (primary key swapped)', {
  setup,
  step: () => swapPrimaryKey({ table: 'toy', name: 'toy_pkey', from: ['id'], to: ['t', 'id'] }),
})
