import { readFileSync } from 'node:fs'
import { setTimeout as sleep } from 'node:timers/promises'
import type pg from 'pg'
import { inject } from 'vitest'
import { connectClient } from '../../src/connection/pg-client.ts'
import { runScript, type CliResult } from '../support/cli.ts'

/** Where a trial pulls the plug. */
export type KillPoint =
  /** Right after the CLI prints a line matching `at`: it stops itself there (freeze-at-line.ts) and is killed. */
  | { at: RegExp }
  /** While a statement matching `during` runs on the server for the CLI, once it has printed a line matching `after`. */
  | { after: RegExp; during: RegExp }

export interface Cut {
  result: CliResult
  /** The CLI died of SIGKILL at the point asked for (stopped at the line; or the statement was seen running). */
  landed: boolean
  /** Where it landed, or why it did not. */
  where: string
}

/** The CLI's sessions: it names them (src/cli/target.ts, src/migrator/migrate.ts). */
const MIGRATOR = 'skills-db migrator'

/**
 * Runs the CLI's `args` against `url` and SIGKILLs it at `point`; returns once the server has ended
 * every session of the killed run (a statement it was running finishes first), so the database
 * then shows exactly what the cut left.
 */
export async function runUntilKilled(url: string, args: string[], point: KillPoint): Promise<Cut> {
  const watcher = await connectClient({ connectionString: url })
  try {
    let landed = false
    let where = 'at' in point ? `the CLI never printed ${point.at}` : `the CLI never printed ${point.after}`
    let acting: Promise<void> | undefined
    const env = { DATABASE_URL: url, ...('at' in point ? { SKILLS_DB_TEST_FREEZE_AT: point.at.source } : {}) }
    const result = await runScript([...args, '--no-codegen', '--app-role', inject('appRole')], env, {
      ...('at' in point ? { preload: 'test/faults/freeze-at-line.ts' } : {}),
      onStdout(stdout, child) {
        if (acting || !('at' in point ? point.at : point.after).test(stdout)) return
        acting = ('at' in point
          ? stoppedWithin(child.pid!, 5_000).then((stopped) => {
            landed = stopped
            where = stopped ? `stopped right after printing ${point.at}` : `printed ${point.at} but did not stop there`
          })
          : statementSeen(watcher, point.during, () => child.exitCode !== null || child.signalCode !== null).then((query) => {
            landed = query !== undefined
            where = query ? `killed while running: ${query.replace(/\s+/g, ' ').slice(0, 120)}` : `ran past ${point.during} before it was seen running`
          }))
          .catch((error: Error) => void (where = `could not watch for the kill point: ${error.message}`))
          .finally(() => child.kill('SIGKILL'))
      },
    })
    await acting
    if (result.signal !== 'SIGKILL') {
      landed = false
      where = `the CLI was not killed (exit code ${result.code}): ${where}`
    }
    await sessionsEnded(watcher)
    return { result, landed, where }
  } finally {
    await watcher.end()
  }
}

/** Whether the process is in the stopped state (Linux's /proc) within `ms`. */
async function stoppedWithin(pid: number, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms
  while (Date.now() < deadline) {
    try {
      // The state is the field after the parenthesised command name.
      if (readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /s, '').startsWith('T')) return true
    } catch {
      return false // gone, or no /proc here: it cannot be seen stopped
    }
    await sleep(1)
  }
  return false
}

/** The text of the migrator's active statement matching `statement`, as soon as the server shows one; undefined once `over()`. */
async function statementSeen(watcher: pg.Client, statement: RegExp, over: () => boolean): Promise<string | undefined> {
  while (!over()) {
    // As fast as the round trips go: the statements asked for last a few milliseconds and up.
    const { rows } = await watcher.query<{ query: string }>(`select query from pg_catalog.pg_stat_activity
      where datname = pg_catalog.current_database() and application_name = $1 and state = 'active' and query ~* $2`, [MIGRATOR, statement.source])
    if (rows[0]) return rows[0].query
  }
  return undefined
}

async function sessionsEnded(watcher: pg.Client): Promise<void> {
  for (let waited = 0; waited < 120_000; waited += 20) {
    const { rows } = await watcher.query<{ n: number }>(`select count(*)::int as n from pg_catalog.pg_stat_activity
      where datname = pg_catalog.current_database() and application_name = $1`, [MIGRATOR])
    if (rows[0]!.n === 0) return
    await sleep(20)
  }
  throw new Error('the killed run\'s sessions did not end within 2 minutes')
}
