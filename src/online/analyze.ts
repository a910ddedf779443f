import { sql } from 'kysely'
import { ident } from './catalog.ts'
import { withLockRetry } from './lock-retry.ts'
import type { Step } from './step.ts'

/**
 * ANALYZE `tables`, one at a time. A column added with a catalog default (no row written) gets no
 * statistics until autovacuum next analyzes the table, which it does only after many rows change:
 * until then the planner guesses about it. ANALYZE samples the table under a lock that lets reads
 * and writes go on, so it may wait (behind a running autovacuum) as long as it must. Statistics
 * are not schema: `down` has nothing to undo.
 */
export function analyzed(tables: readonly string[]): Step {
  for (const table of tables) ident(table)
  return {
    name: `analyze ${tables.join(', ')}`,
    async up(db) {
      for (const table of tables) await withLockRetry(db, table, (trx) => sql`analyze ${sql.table(table)}`.execute(trx), { appSafe: true })
    },
    async down() {},
  }
}
