import { sql, type Kysely } from 'kysely'
import { createLoginRoleIfMissing, roleName } from './app-role.ts'
import { grantOn, revokeAllOn, type TablePrivilege } from './grant.ts'
import { withLockRetry } from './lock-retry.ts'
import { forget, readRecorded, record } from './recorded-settings.ts'
import { run } from './run-context.ts'
import type { Step } from './step.ts'

const CREATED = 'old_app_roles_created'
const CONFINED = 'old_app_roles'

/** The old app's roles named for this run (empty when none were named). */
export async function namedOldAppRoles(_db: Kysely<any>): Promise<string[]> {
  return run().oldAppRoles.map((r) => r.trim()).filter(Boolean).map((r) => roleName(r, 'old app role'))
}

const list = (value: string | undefined) => (value ?? '').split(',').filter(Boolean)

/**
 * The roles named for the run get the old app's `privileges` on `tables`, created when missing.
 * A role is created and recorded as created in one transaction, so a kill between the two cannot
 * leave a role that `down` would not clean up; grants are repeated on every run (they add nothing
 * the second time), so a rerun or an up after a down grants again. `down` revokes from the roles
 * it created and keeps them (roles are cluster-wide) and their record.
 */
export function namedOldAppRolesGranted(tables: readonly string[], privileges: readonly TablePrivilege[]): Step {
  return {
    name: 'named old app roles',
    async up(db) {
      for (const role of await namedOldAppRoles(db)) {
        await db.transaction().execute(async (trx) => {
          if (await createLoginRoleIfMissing(trx, role)) {
            await record(trx, CREATED, [...new Set([...list(await readRecorded(trx, CREATED)), role])].join(','), { replace: true })
          }
        })
        for (const table of tables) await grantOn(db, table, role, privileges)
      }
    },
    async down(db) {
      for (const role of list(await readRecorded(db, CREATED))) {
        for (const table of tables) await revokeAllOn(db, table, role)
      }
    },
  }
}

/** Records the roles the old-app policies confine (found by `find`), for the policies and their `down`. */
export function recordOldAppRoles(find: (db: Kysely<any>) => Promise<string[]>): Step {
  return {
    name: 'old app roles',
    up: async (db) => record(db, CONFINED, (await find(db)).join(','), { replace: true }),
    down: (db) => forget(db, CONFINED),
  }
}

/** The roles {@link recordOldAppRoles} recorded (empty before it ran). */
export async function oldAppRoles(db: Kysely<any>): Promise<string[]> {
  return list(await readRecorded(db, CONFINED))
}

const TAKEN = 'old_app_privileges_taken'

/**
 * Takes from the confined old-app roles (not the owner) the table privileges that row security does
 * not cover: TRUNCATE empties every tenant's rows, TRIGGER runs the role's code as whoever writes
 * next (any tenant's app, a superuser), REFERENCES probes other tenants' keys. Recorded per role and
 * table, so `down` gives back exactly what was taken.
 */
export function oldAppEscapePrivilegesRevoked(tables: readonly string[]): Step {
  return {
    name: 'old app roles lose TRUNCATE, TRIGGER, REFERENCES',
    async up(db) {
      const roles = await oldAppRoles(db)
      if (roles.length === 0) return
      const { rows } = await sql<{ role: string; table: string; privilege: string }>`
        select r.rolname as role, c.relname as table, a.privilege_type as privilege
        from pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a join pg_catalog.pg_roles r on r.oid = a.grantee
        where c.oid = any(${tables.map((t) => `public.${t}`)}::regclass[]) and a.grantee <> c.relowner
          and r.rolname = any(${roles}::text[]) and a.privilege_type in ('TRUNCATE', 'TRIGGER', 'REFERENCES')
        order by 1, 2, 3`.execute(db)
      if (rows.length === 0) return
      const taken = new Set(list(await readRecorded(db, TAKEN)))
      for (const r of rows) taken.add(`${r.role}:${r.table}:${r.privilege}`)
      // Recorded before the REVOKE: a run killed in between still gives it back on the way down.
      await record(db, TAKEN, [...taken].join(','), { replace: true })
      for (const r of rows) {
        await withLockRetry(db, r.table, (trx) => sql`revoke ${sql.raw(r.privilege)} on ${sql.table(r.table)} from ${sql.id(r.role)}`.execute(trx))
      }
    },
    async down(db) {
      for (const entry of list(await readRecorded(db, TAKEN))) {
        const [role, table, privilege] = entry.split(':') as [string, string, string]
        if (!['TRUNCATE', 'TRIGGER', 'REFERENCES'].includes(privilege)) continue
        await withLockRetry(db, table, (trx) => sql`grant ${sql.raw(privilege)} on ${sql.table(table)} to ${sql.id(role)}`.execute(trx))
      }
      await forget(db, TAKEN)
    },
  }
}
