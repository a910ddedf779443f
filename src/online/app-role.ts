import { sql, type Kysely } from 'kysely'
import { ident } from './catalog.ts'
import { forget, readRecorded, record } from './recorded-settings.ts'
import { run } from './run-context.ts'
import type { Step } from './step.ts'

const DEFAULT_APP_ROLE = 'app_user'

/** A role the run names that cannot be used: not a plain name, or not the database's application role. */
export class RoleNameError extends Error {
  /** Always `'RoleNameError'`, so a log line or a check of `error.name` tells it apart. */
  override name = 'RoleNameError'
}

/**
 * The application role of this database: the one recorded when it was created, so a later
 * `down` revokes from the same role. A different name asked for explicitly is an error.
 */
export async function appRoleName(db: Kysely<any>): Promise<string> {
  const asked = run().appRole || null
  const recorded = (await readRecorded(db, 'app_role')) ?? null
  if (recorded && asked && asked !== recorded) {
    throw new RoleNameError(`this database's application role is ${recorded}, not ${asked}: ask for ${recorded} (or name none, and ${recorded} is used)`)
  }
  return roleName(recorded ?? asked ?? DEFAULT_APP_ROLE, 'application role')
}

/** A role name the building blocks may splice into DDL. */
export function roleName(name: string, what: string): string {
  try {
    return ident(name)
  } catch {
    throw new RoleNameError(`${what} name "${name}" is not allowed: use lower-case letters, digits and _`)
  }
}

/** Creates `role` (LOGIN, and nothing that escapes row security) unless it exists; true when it did. */
export async function createLoginRoleIfMissing(db: Kysely<any>, role: string): Promise<boolean> {
  const { rows } = await sql`select 1 from pg_catalog.pg_roles where rolname = ${role}`.execute(db)
  if (rows.length > 0) return false
  await sql`create role ${sql.id(role)} login nosuperuser nobypassrls nocreatedb nocreaterole noinherit`.execute(db)
  return true
}

/**
 * The role the multi-tenant app connects as: LOGIN, no superuser, no BYPASSRLS, owner of nothing.
 * Created without a password when missing (production sets one: ALTER ROLE … PASSWORD). The
 * migrator refuses an existing role that could escape row security before anything runs
 * (see migrator/app-role-check.ts). `down` keeps the role: roles are cluster-wide.
 */
export const appRole: Step = {
  name: 'application role',
  async up(db) {
    const role = await appRoleName(db)
    await createLoginRoleIfMissing(db, role)
    // Recorded only once it exists, so a refused name does not stick to the database.
    await record(db, 'app_role', role)
  },
  down: (db) => forget(db, 'app_role'),
}
