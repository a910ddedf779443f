import { sql } from 'kysely'
import { databaseFunction } from '../../src/online/database-function.ts'
import { blockLaws } from '../support/block-laws.ts'

blockLaws('online/database-function', {
  setup: async () => {},
  step: () => databaseFunction({
    signature: 'public.toy_double(integer)',
    definition: sql`create or replace function public.toy_double(x integer) returns integer language plpgsql
      set search_path = pg_catalog, pg_temp as $$ begin return x * 2; end $$`,
    executeBy: 'app role',
  }),
  context: ({ role }) => ({ appRole: role }),
})
