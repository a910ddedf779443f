import { undistribute } from '../../citus/undistribute.ts'
import type { Command } from '../command.ts'
import { lockOptions, LOCKS, TARGET } from '../options.ts'
import { usingTarget } from '../target.ts'

export const undistributeCommand: Command = {
  name: 'undistribute',
  summary: 'Undoes distribute: every table back to a plain table of the coordinator with all its rows, and the single-node tenant context; the schema is the contracted one again, and distribute can run again. Idempotent; a rerun after a kill completes.',
  options: { ...TARGET, ...LOCKS },
  run(values) {
    return usingTarget(values, async (db) => {
      const { undistributed } = await undistribute(db, { logger: { info: (m) => console.log(m) }, ...lockOptions(values) })
      console.log(undistributed.length ? `back on this node: ${undistributed.join(', ')}` : 'nothing was distributed')
      return 0
    }, { connections: 2 })
  },
}
