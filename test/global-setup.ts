import type { TestProject } from 'vitest/node'
import { openDb } from '../src/connection/create-db.ts'
import { adminQuery, createScratchDatabase } from '../src/connection/scratch-database.ts'
import { migrateOpen, migrateToLatest } from '../src/migrator/migrate.ts'
import { dropRunLeftovers } from './support/leftovers.ts'
import { newRunId } from '../fixtures/run-id.ts'
import { TEST_TENANT_KEY } from './support/tenant-key.ts'
import { startTestServer } from '../fixtures/test-server.ts'

declare module 'vitest' {
  export interface ProvidedContext {
    adminUrl: string
    runId: string
    template: string
    appRole: string
    /** Owner of the template's tables, and its migrator: NOSUPERUSER NOBYPASSRLS CREATEROLE. */
    ownerRole: string
  }
}

/**
 * One server per run, one migrated template to clone per test file; everything removed afterwards.
 * The template is migrated the way managed hosting must do it: by a NOSUPERUSER, NOBYPASSRLS
 * owner with CREATEROLE. (Tests that migrate databases of their own do it as the superuser.)
 */
export default async function setup(project: TestProject) {
  const server = await startTestServer()
  const runId = newRunId()
  const template = `${runId}_tpl`
  const appRole = `${runId}_app`
  const ownerRole = `${runId}_owner`
  try {
    await dropRunLeftovers(server.adminUrl, { deadRunsOnly: true })
    await adminQuery(server.adminUrl, `create role "${ownerRole}" login password 'test' nosuperuser nobypassrls createrole`)
    const templateUrl = new URL(await createScratchDatabase(server.adminUrl, template))
    await adminQuery(server.adminUrl, `alter database "${template}" owner to "${ownerRole}"`)
    templateUrl.username = ownerRole
    templateUrl.password = 'test'
    const db = await openDb<any>(templateUrl.toString(), { max: 1 })
    try {
      // Latest, then the open phase: the tests make a second tenant, which the expand schema refuses until then.
      for (const migrate of [migrateToLatest, migrateOpen]) {
        const outcome = await migrate(db, { appRole, tenantKeys: [TEST_TENANT_KEY] })
        if (outcome.status === 'error') throw new Error(`migrating the test template failed: ${outcome.error.migration}: ${outcome.error.message}`)
      }
    } finally {
      await db.destroy()
    }
    // Tests log in as the application role for real, so RLS applies as it will in production.
    const role = await adminQuery(server.adminUrl, 'select 1 from pg_roles where rolname = $1', [appRole])
    if (role.rowCount) await adminQuery(server.adminUrl, `alter role "${appRole}" password 'test'`)
  } catch (error) {
    await dropRunLeftovers(server.adminUrl, { runId }).catch(() => {})
    await server.stop()
    throw error
  }
  console.log(`test server: ${server.source}`)
  project.provide('adminUrl', server.adminUrl)
  project.provide('runId', runId)
  project.provide('template', template)
  project.provide('appRole', appRole)
  project.provide('ownerRole', ownerRole)
  return async () => {
    try {
      await dropRunLeftovers(server.adminUrl, { runId })
    } finally {
      await server.stop()
    }
  }
}
