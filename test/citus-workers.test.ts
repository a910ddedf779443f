import { describeOnCitus } from './support/citus-suite.ts'

// The coordinator left out of the metadata: the two workers hold every shard.
await describeOnCitus('workers-only')
