/**
 * A Citus coordinator for test/citus.test.ts: CITUS_URL (a database the test may empty and fill:
 * its public, skills_db and tenant_context schemas are dropped), else a citusdata/citus container
 * when a container runtime answers, else none, with the reason the tests print as "not run".
 */
export interface CitusServer {
  url: string
  stop(): Promise<void>
}

export async function startCitusServer(): Promise<CitusServer | { notRun: string }> {
  if (process.env.CITUS_URL) return { url: process.env.CITUS_URL, stop: async () => {} }
  const { getContainerRuntimeClient, GenericContainer, Wait } = await import('testcontainers')
  try {
    await getContainerRuntimeClient()
  } catch {
    return { notRun: 'no CITUS_URL, and no container runtime for the citusdata/citus image (Citus is not packaged for this machine)' }
  }
  const container = await new GenericContainer('citusdata/citus:13.0')
    .withEnvironment({ POSTGRES_PASSWORD: 'citus' })
    .withExposedPorts(5432)
    .withWaitStrategy(Wait.forLogMessage(/database system is ready to accept connections/, 2))
    .start()
  return {
    url: `postgres://postgres:citus@${container.getHost()}:${container.getMappedPort(5432)}/postgres`,
    stop: async () => void (await container.stop()),
  }
}
