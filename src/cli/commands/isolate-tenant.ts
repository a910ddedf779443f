import { isolateTenant } from '../../citus/isolate-tenant.ts'
import { UsageError, type Command } from '../command.ts'
import { lockOptions, LOCKS, TARGET } from '../options.ts'
import { usingTarget } from '../target.ts'

export const isolateTenantCommand: Command = {
  name: 'isolate-tenant',
  summary: 'On a distributed database: gives one tenant shards of its own in every colocated table (isolate_tenant_to_new_shard … CASCADE); every request waits while one shard of each table is copied; then move them (citus_move_shard_placement) or let the rebalancer spread them.',
  positionals: [{ name: '<tenant id>', required: true, help: 'the tenant (tenants.id) to isolate' }],
  options: { ...TARGET, ...LOCKS },
  run(values, positionals) {
    const tenantId = positionals[0]!
    if (!tenantId.trim()) throw new UsageError('the tenant id is empty')
    return usingTarget(values, async (db) => {
      const { shards, already } = await isolateTenant(db, tenantId, { logger: { info: (m) => console.log(m) }, ...lockOptions(values) })
      console.log(`${already ? 'already isolated' : 'isolated'}: tenant ${tenantId}, ${shards.length} shard(s) of its own on ${[...new Set(shards.map((s) => s.node))].join(', ')}`)
      return 0
    }, { connections: 2 })
  },
}
