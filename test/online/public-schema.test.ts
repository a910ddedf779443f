import { sql } from 'kysely'
import { revokePublicCreate } from '../../src/online/public-schema.ts'
import { blockLaws } from '../support/block-laws.ts'

// As on a cluster first created on PostgreSQL 14 or older: every role may create in public.
blockLaws('online/public-schema', {
  setup: async (db) => void (await sql`grant create on schema public to public`.execute(db)),
  step: () => revokePublicCreate,
})
