import { distribute } from '../../citus/distribute.ts'
import type { Command } from '../command.ts'
import { UsageError } from '../command.ts'
import { lockOptions, LOCKS, TARGET } from '../options.ts'
import { usingTarget } from '../target.ts'

export const distributeCommand: Command = {
  name: 'distribute',
  summary: 'On a database with the citus extension, after the contract phase: tenants (and the tenant keys) become reference tables, the ten tenant tables, audit_signatures and the audit chain\'s heads (twelve) distributed by tenant_id in one colocation group, and the tenant context one the workers check. Idempotent; a rerun after a kill completes.',
  options: { ...TARGET, ...LOCKS, 'shard-count': { type: 'string', value: '<n>', help: 'shards per distributed table (default: Citus\'s citus.shard_count)' },
    'online-from': { type: 'string', value: '<MB|off>', help: 'distribute tables of this many MB or more online, the app\'s writes going on, where the cluster allows it (the coordinator in the metadata, wal_level = logical), smaller ones by a blocking copy (default 1; 0: every table but site_settings, users, api_keys and the audit chain\'s three, which always block; off: none)' } },
  run(values) {
    const shards = values['shard-count']
    const shardCount = typeof shards === 'string' ? Number(shards) : undefined
    if (shardCount !== undefined && (!Number.isInteger(shardCount) || shardCount <= 0)) throw new UsageError(`--shard-count must be a positive whole number, not "${shards}"`)
    const from = values['online-from']
    const onlineMb = typeof from === 'string' && from !== 'off' ? Number(from) : undefined
    if (onlineMb !== undefined && !/^\d+(\.\d+)?$/.test(from as string)) throw new UsageError(`--online-from must be a number of MB, 0 or more, or off, not "${from}"`)
    return usingTarget(values, async (db) => {
      const { distributed } = await distribute(db, { logger: { info: (m) => console.log(m) }, ...lockOptions(values), ...(shardCount ? { shardCount } : {}), ...(from === 'off' ? { onlineFromBytes: false as const } : onlineMb !== undefined ? { onlineFromBytes: Math.round(onlineMb * (1 << 20)) } : {}) })
      console.log(distributed.length ? `distributed: ${distributed.join(', ')}` : 'already distributed')
      return 0
    }, { connections: 2 })
  },
}
