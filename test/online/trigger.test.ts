import { sql } from 'kysely'
import { databaseFunction } from '../../src/online/database-function.ts'
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

/** One function, the triggers of two tables: each trigger step leaves the function to its own step. */
const sharedFunction = databaseFunction({
  signature: 'public.toy_refuse()',
  definition: sql`create or replace function public.toy_refuse() returns trigger language plpgsql
    set search_path = pg_catalog, pg_temp as $$ begin raise exception 'refused'; end $$`,
})
blockLaws('online/trigger (a function another step made)', {
  setup: async (db) => {
    await sql`create table toy (id int primary key); create table toy2 (id int primary key)`.execute(db)
    await sharedFunction.up(db)
    await trigger({ table: 'toy2', name: 'toy2_refuse', events: 'before truncate', level: 'statement', fn: { name: 'public.toy_refuse' } }).up(db)
  },
  step: () => trigger({ table: 'toy', name: 'toy_refuse', events: 'before truncate', level: 'statement', fn: { name: 'public.toy_refuse' } }),
})
