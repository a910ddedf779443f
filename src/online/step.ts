import type { Kysely } from 'kysely'
import { progress } from './run-context.ts'

/**
 * One schema change and its reverse. Both directions are idempotent — a run killed anywhere
 * resumes by doing them again — so a migration is a list of steps and its `down` is derived.
 */
export interface Step {
  name: string
  /** 'not needed': it found nothing to do on this database (a conditional step), and the run says so. */
  up(db: Kysely<any>): Promise<void | 'not needed'>
  down(db: Kysely<any>): Promise<void | 'not needed'>
  /** Nothing to do or say on the way up (a guard of `down`): the run's progress does not list it then. */
  quietUp?: true
}

/** The step that undoes `step`: dropping something is the reverse of creating it. */
export function reverse(step: Step): Step {
  return { name: `remove ${step.name}`, up: step.down, down: step.up }
}

export async function applySteps(db: Kysely<any>, steps: readonly Step[]): Promise<void> {
  for (const step of steps) await (step.quietUp ? step.up(db) : timed(step.name, () => step.up(db)))
}

export async function revertSteps(db: Kysely<any>, steps: readonly Step[]): Promise<void> {
  for (const step of [...steps].reverse()) await timed(`undo ${step.name}`, () => step.down(db))
}

async function timed(name: string, fn: () => Promise<void | 'not needed'>): Promise<void> {
  const started = performance.now()
  const outcome = await fn()
  progress(`  ${name}${outcome === 'not needed' ? ': not needed here' : ''} (${Math.round(performance.now() - started)} ms)`)
}
