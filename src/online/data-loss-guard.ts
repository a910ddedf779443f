import { sql, type Kysely } from 'kysely'
import type { Step } from './step.ts'

/** Session setting through which `migrateDown({ allowDataLoss: true })` (CLI: `--force`) reaches a migration. */
export const ALLOW_DATA_LOSS_SETTING = 'skills_db.allow_data_loss'

export class DataLossRefused extends Error {
  override name = 'DataLossRefused'
}

/**
 * Stops a `down` before it destroys data, unless the caller explicitly allowed it.
 * `wouldLoseData` is only asked when the guard is armed.
 */
export async function refuseDataLoss(
  db: Kysely<any>,
  what: string,
  wouldLoseData: () => Promise<boolean>,
): Promise<void> {
  const { rows } = await sql<{ v: string | null }>`select pg_catalog.current_setting(${ALLOW_DATA_LOSS_SETTING}::text, true) as v`.execute(db)
  if (rows[0]?.v === 'on') return
  if (await wouldLoseData()) {
    throw new DataLossRefused(`refusing to roll back: ${what}; run migrate:down again with --force to accept the loss`)
  }
}

/**
 * A step that does nothing on the way up and, on the way down, checks before anything is undone.
 * Put it last in a migration's steps: `down` runs steps in reverse, so it runs first, and a
 * refused `down` leaves the schema exactly as it was.
 */
export function guardDown(name: string, check: (db: Kysely<any>) => Promise<void>): Step {
  return { name, up: async () => {}, down: check }
}
