import type { Kysely } from 'kysely'
import { forget, readRecorded, record } from './recorded-settings.ts'
import type { Step } from './step.ts'

/**
 * Steps taken only where `applies` holds when the migration first meets the database: a migration
 * that runs on more than one schema (before or after the contract phase, say) changes only what
 * is there. Whether they were taken is recorded under `key` before they start, so a rerun after a
 * kill finishes them, and `down` undoes exactly them (in reverse), nothing it did not do.
 */
export function where(key: string, applies: (db: Kysely<any>) => Promise<boolean>, steps: readonly Step[]): Step {
  const taken = async (db: Kysely<any>) => (await readRecorded(db, key)) === 'taken'
  return {
    name: steps.map((s) => s.name).join('; '),
    async up(db) {
      if (!(await taken(db))) {
        if (!(await applies(db))) return 'not needed'
        await record(db, key, 'taken', { replace: true })
      }
      for (const step of steps) await step.up(db)
    },
    async down(db) {
      if (!(await taken(db))) return 'not needed'
      for (const step of [...steps].reverse()) await step.down(db)
      await forget(db, key)
    },
  }
}
