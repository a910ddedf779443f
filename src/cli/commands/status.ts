import { PHASE_COMMAND } from '../../migrator/migration-phases.ts'
import { migrationStatus } from '../../migrator/migration-status.ts'
import { storedTenantKeyIds } from '../../migrator/tenant-context-keys.ts'
import type { Command } from '../command.ts'
import { TARGET } from '../options.ts'
import { usingTarget } from '../target.ts'

export const status: Command = {
  name: 'status',
  summary: 'Lists applied migrations (with when), pending ones, and recorded ones this code does not have; and the ids of the tenant keys the database holds. Changes nothing.',
  options: { ...TARGET },
  run: (values) =>
    usingTarget(values, async (db) => {
      const s = await migrationStatus(db)
      for (const m of s.applied) console.log(`  applied  ${m.name}  ${m.appliedAt}`)
      for (const name of s.pending) {
        const phase = s.phases[name]
        const waits = s.waiting.includes(name) && phase !== undefined && phase !== 'expand' ? `  (waits for the operator: ${PHASE_COMMAND[phase].cli}, ${PHASE_COMMAND[phase].when})` : ''
        console.log(`  pending  ${name}${waits}`)
      }
      for (const m of s.unknown) console.log(`  unknown  ${m.name}  ${m.appliedAt}  (recorded in the database, not in this code)`)
      console.log(`${s.applied.length} applied, ${s.pending.length} pending, ${s.unknown.length} unknown; phase: ${s.phase}`)
      const ids = await storedTenantKeyIds(db).catch(() => undefined)
      if (ids) console.log(`tenant keys held by the database: ${ids.join(', ') || 'none (withTenant refuses every tenant: run latest with SKILLS_DB_TENANT_KEYS)'}`)
      return 0
    }),
}
