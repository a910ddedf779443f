import { sql, type Kysely } from 'kysely'
import { indexInfo } from '../online/catalog.ts'
import { dropIndexConcurrently, index } from '../online/concurrent-index.ts'
import { where } from '../online/conditional-step.ts'
import { DownBlocked, guardDown } from '../online/data-loss-guard.ts'
import { applySteps, revertSteps, type Step } from '../online/step.ts'

/**
 * Part of the open phase. 0010, written before it, builds a global index on api_keys.key_hash,
 * which 0015 drops again at the end of the contract phase. In between, on a database open to more
 * tenants, EXPLAIN ANALYZE of the app role counts through it the other tenants' key hashes (an
 * outside review recovered every one while a contract run stood stopped after 0010's index). Here
 * an empty index takes that name, in the collation the app role cannot name: 0010 finds its index
 * built and builds none, 0015 drops it. A usable one left by a contract run that stopped goes.
 */
export const phase = 'open'

// Frozen: the table, index and collation below are this migration's own, as of when it was written
// (see README.md in this folder).
const NAME = 'api_keys_key_hash_idx'

/** 0015 is still to come (it drops 0014's internal key on key_hash, which only an opened, uncontracted database has). */
async function contractStillToCome(db: Kysely<any>): Promise<boolean> {
  const { rows } = await sql`select 1 from pg_catalog.pg_class where oid = pg_catalog.to_regclass('public.api_keys_key_hash_any_tenant')`.execute(db)
  return rows.length > 0
}

/** Undone, the contract phase would build a global index the app role counts through again: only while there is one tenant. */
const oneTenant = guardDown('a single tenant', async (db) => {
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from tenants`.execute(db)
  if (rows[0]!.n > 1) {
    throw new DownBlocked(`cannot roll back the open phase: the database has ${rows[0]!.n} tenants, and without the name this takes the contract phase would build an index through which the app role counts other tenants' API key hashes; delete the other tenants first`)
  }
})

// The guard last: down runs the steps in reverse, so it is checked before anything is undone.
const steps: Step[] = [
  where('0017 drop the usable api_keys_key_hash_idx', async (db) => (await indexInfo(db, NAME))?.empty === false, [{
    name: `drop index ${NAME} (a contract run that stopped after 0010 built it)`,
    up: (db) => dropIndexConcurrently(db, NAME),
    // 0010 builds it again should the contract phase run without this migration.
    async down() {},
  }]),
  where('0017 reserve api_keys_key_hash_idx', async (db) => !(await indexInfo(db, NAME)) && (await contractStillToCome(db)), [
    index({ table: 'api_keys', name: NAME, columns: ['key_hash'], collate: 'skills_db.internal', empty: true }),
  ]),
  oneTenant,
]

export const up = (db: Kysely<any>) => applySteps(db, steps)
export const down = (db: Kysely<any>) => revertSteps(db, steps)
