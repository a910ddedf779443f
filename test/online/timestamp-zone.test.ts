import { sql } from 'kysely'
import { timestampsWithTimeZone } from '../../src/online/timestamp-zone.ts'
import { blockLaws } from '../support/block-laws.ts'

blockLaws('online/timestamp-zone', {
  setup: async (db) => void (await sql`create table toy (id int primary key, t text, at timestamp, until timestamp);
    create index toy_t_at_idx on toy (t, at);
    insert into toy values (1, 'a', '2026-01-01 12:00', null), (2, 'b', '2026-06-01 00:00', '2027-01-01')`.execute(db)),
  step: () => timestampsWithTimeZone('toy', ['at', 'until'], { indexes: [{ table: 'toy', name: 'toy_t_at_idx', columns: ['t', 'at'] }] }),
})
