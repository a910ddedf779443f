import { sql } from 'kysely'
import { trigger, triggerFiresAlways } from '../../src/online/trigger.ts'
import { blockLaws } from '../support/block-laws.ts'

const toyTrigger = trigger({
  table: 'toy',
  name: 'toy_stamp',
  events: 'before insert',
  level: 'row',
  fn: {
    name: 'public.toy_stamp',
    definition: sql`create or replace function public.toy_stamp() returns trigger language plpgsql
      set search_path = pg_catalog, pg_temp as $$ begin new.v := 1; return new; end $$`,
  },
})

blockLaws('online/trigger', {
  setup: async (db) => void (await sql`create table toy (id int primary key, v int)`.execute(db)),
  step: () => toyTrigger,
})

blockLaws('online/trigger (fires always)', {
  setup: async (db) => {
    await sql`create table toy (id int primary key, v int)`.execute(db)
    await toyTrigger.up(db)
  },
  step: () => triggerFiresAlways('toy', 'toy_stamp'),
})
