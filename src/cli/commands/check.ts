import { citusReadiness } from '../../citus/readiness.ts'
import { UsageError, type Command } from '../command.ts'
import { TARGET } from '../options.ts'
import { usingTarget } from '../target.ts'

export const check: Command = {
  name: 'check',
  summary: 'With --citus: inspects the schema for what Citus would refuse once the tables are distributed by tenant_id, and names every violation. Exit 1 when there is one. Changes nothing; needs no Citus.',
  options: { ...TARGET, citus: { type: 'boolean', help: 'the Citus readiness check (the only check so far)' } },
  run(values) {
    if (values.citus !== true) throw new UsageError('check needs --citus (the only check so far)')
    return usingTarget(values, async (db) => {
      const violations = await citusReadiness(db)
      for (const v of violations) console.log(`  ${v.rule}: ${v.object}: ${v.message}`)
      if (violations.length === 0) {
        console.log('ready for Citus: every key and reference includes tenant_id, and nothing else Citus refuses was found')
        return 0
      }
      console.error(`error: ${violations.length} thing(s) Citus would refuse (listed above); the contract phase (skills-db contract) removes those of skills-db's own schema`)
      return 1
    })
  },
}
