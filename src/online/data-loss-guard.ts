import type { Kysely } from 'kysely'
import { Refusal } from './refusal.ts'
import { run } from './run-context.ts'
import type { Step } from './step.ts'

/** A `down` that would destroy data it cannot restore; the run's `allowDataLoss` accepts the loss. */
export class DataLossRefused extends Refusal {
  /** Always `'DataLossRefused'`, so a log line or a check of `error.name` tells it apart. */
  override name = 'DataLossRefused'
  constructor(what: string) {
    super('data-loss', `refusing to roll back: ${what}`, 'allowDataLoss accepts the loss')
  }
}

/** A `down` that cannot rebuild what came before while the data is as it is: no option overrules it, the data must change. */
export class DownBlocked extends Refusal {
  /** Always `'DownBlocked'`, so a log line or a check of `error.name` tells it apart. */
  override name = 'DownBlocked'
  constructor(message: string) {
    super('down-blocked', message)
  }
}

/**
 * Stops a `down` before it destroys data, unless the run allows it (`allowDataLoss`).
 * `wouldLoseData` is only asked when the guard is armed.
 */
export async function refuseDataLoss(
  _db: Kysely<any>,
  what: string,
  wouldLoseData: () => Promise<boolean>,
): Promise<void> {
  if (run().allowDataLoss) return
  if (await wouldLoseData()) {
    throw new DataLossRefused(what)
  }
}

/**
 * A step that does nothing on the way up and, on the way down, checks before anything is undone.
 * Put it last in a migration's steps: `down` runs steps in reverse, so it runs first, and a
 * refused `down` leaves the schema exactly as it was.
 */
export function guardDown(name: string, check: (db: Kysely<any>) => Promise<void>): Step {
  return { name, up: async () => {}, down: check, quietUp: true }
}
