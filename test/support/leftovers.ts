import pg from 'pg'
import { adminQuery } from '../../src/connection/scratch-database.ts'
import { isAlive } from '../../src/connection/embedded-postgres.ts'
import { ownerPidOf } from '../../fixtures/run-id.ts'

/**
 * Drops the databases and roles of one test run (`runId`), or of every run whose process is gone
 * (`deadRunsOnly`). Databases go first: a role cannot be dropped while a database grants it rights.
 */
export async function dropRunLeftovers(adminUrl: string, which: { runId?: string; deadRunsOnly?: boolean }): Promise<void> {
  const mine = (name: string) => {
    if (which.runId) return name.startsWith(`${which.runId}_`)
    const pid = ownerPidOf(name)
    return which.deadRunsOnly === true && pid !== undefined && !isAlive(pid)
  }
  const dbs = await adminQuery(adminUrl, `select datname from pg_database where datname like 'skills\\_%'`)
  for (const { datname } of dbs.rows as { datname: string }[]) {
    if (!mine(datname)) continue
    await adminQuery(adminUrl, `alter database ${pg.escapeIdentifier(datname)} is_template false`).catch(() => {})
    await adminQuery(adminUrl, `drop database if exists ${pg.escapeIdentifier(datname)} with (force)`)
  }
  const roles = await adminQuery(adminUrl, `select rolname from pg_roles where rolname like 'skills\\_%'`)
  for (const { rolname } of roles.rows as { rolname: string }[]) {
    if (mine(rolname)) await adminQuery(adminUrl, `drop role if exists ${pg.escapeIdentifier(rolname)}`)
  }
}
