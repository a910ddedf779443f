import { connectClient } from '../../src/connection/pg-client.ts'
import { citusInstallation, startCitusCluster, type CitusTopology } from '../../fixtures/citus-cluster.ts'

/**
 * A Citus coordinator for the Citus suite (test/support/citus-suite.ts), of the topology asked for:
 * - CITUS_URL, when it names a coordinator of that topology (a database the suite may empty and
 *   fill: everything of public, skills_db and tenant_context that no extension owns is dropped);
 * - else a cluster of its own from the machine's PostgreSQL when Citus is installed into it
 *   (fixtures/citus-cluster.ts: a coordinator and two workers, removed afterwards);
 * - else none, with the reason the tests print as "not run".
 * SKILLS_DB_CITUS_TESTS=off says not to run it (CI runs the suite once, in its PostgreSQL 15 step).
 */
export interface CitusServer {
  url: string
  /** CITUS_URL: a cluster the suite did not make, whose roles it must drop afterwards. */
  shared: boolean
  stop(): Promise<void>
}

export async function startCitusServer(topology: CitusTopology): Promise<CitusServer | { notRun: string }> {
  if (process.env.SKILLS_DB_CITUS_TESTS === 'off') return { notRun: 'SKILLS_DB_CITUS_TESTS=off (CI runs the Citus suite once, in its PostgreSQL 15 step)' }
  if (process.env.CITUS_URL) {
    const found = await topologyOf(process.env.CITUS_URL)
    if (found === topology) return { url: process.env.CITUS_URL, shared: true, stop: async () => {} }
  }
  const installed = citusInstallation()
  if ('notInstalled' in installed) {
    return { notRun: process.env.CITUS_URL ? `CITUS_URL is a ${await topologyOf(process.env.CITUS_URL)} cluster, and ${installed.notInstalled}` : installed.notInstalled }
  }
  const cluster = await startCitusCluster(topology)
  return { url: cluster.url, shared: false, stop: cluster.stop }
}

async function topologyOf(url: string): Promise<CitusTopology> {
  const client = await connectClient({ connectionString: url })
  try {
    const { rows } = await client.query(`select exists (select 1 from pg_dist_node where groupid = 0) as coordinator`)
    return rows[0].coordinator ? 'coordinator-in-metadata' : 'workers-only'
  } finally {
    await client.end()
  }
}
