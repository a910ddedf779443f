import { describeOnCitus } from './support/citus-suite.ts'

// The coordinator registered as a node (citus_set_coordinator_host): Citus's single-node image does
// this, and create_reference_table then makes the tables that reference tenants Citus local tables.
await describeOnCitus('coordinator-in-metadata')
