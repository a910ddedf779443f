import { sql, type Kysely } from 'kysely'
import { ident } from '../online/catalog.ts'
import { withLockRetry } from '../online/lock-retry.ts'
import type { Step } from '../online/step.ts'

/** Session setting through which `migrateToLatest({ appRole })` names the application role to migrations. */
export const APP_ROLE_SETTING = 'skills_db.app_role'
export const DEFAULT_APP_ROLE = 'app_user'

/**
 * The application role of this database: the one recorded when 0005 created it, so a later
 * `down` revokes from the same role. A different name asked for explicitly is an error.
 */
export async function appRoleName(db: Kysely<any>): Promise<string> {
  const { rows } = await sql<{ asked: string | null; stored: boolean }>`
    select nullif(current_setting(${APP_ROLE_SETTING}, true), '') as asked,
      to_regclass('skills_db.settings') is not null as stored`.execute(db)
  const asked = rows[0]?.asked ?? null
  const recorded = rows[0]?.stored
    ? ((await sql<{ value: string }>`select value from skills_db.settings where key = 'app_role'`.execute(db)).rows[0]?.value ?? null)
    : null
  if (recorded && asked && asked !== recorded) {
    throw new Error(`this database's application role is ${recorded}, not ${asked}: drop --app-role or pass --app-role ${recorded}`)
  }
  const name = recorded ?? asked ?? DEFAULT_APP_ROLE
  try {
    return ident(name)
  } catch {
    throw new Error(`application role name "${name}" is not allowed: use lower-case letters, digits and _`)
  }
}

/**
 * The role the multi-tenant app connects as: LOGIN, no superuser, no BYPASSRLS, owner of nothing.
 * Created without a password when missing (production sets one: ALTER ROLE … PASSWORD). An
 * existing role that would bypass row security is refused. `down` keeps the role: roles are
 * cluster-wide and may serve other databases.
 */
export const appRole: Step = {
  name: 'application role',
  async up(db) {
    const role = await appRoleName(db)
    const { rows } = await sql<{ rolsuper: boolean; rolbypassrls: boolean }>`
      select rolsuper, rolbypassrls from pg_roles where rolname = ${role}`.execute(db)
    if (rows[0]?.rolsuper || rows[0]?.rolbypassrls) {
      throw new Error(`role ${role} is a superuser or has BYPASSRLS, so row-level security would not apply to it; pick another --app-role or ALTER ROLE ${role} NOSUPERUSER NOBYPASSRLS`)
    }
    if (!rows[0]) await sql`create role ${sql.id(role)} login nosuperuser nobypassrls nocreatedb nocreaterole noinherit`.execute(db)
    // Recorded only once accepted, so a refused name does not stick to the database.
    await sql`create table if not exists skills_db.settings (key text primary key, value text not null)`.execute(db)
    await sql`insert into skills_db.settings (key, value) values ('app_role', ${role}) on conflict (key) do nothing`.execute(db)
  },
  async down(db) {
    if ((await sql<{ t: string | null }>`select to_regclass('skills_db.settings')::text as t`.execute(db)).rows[0]?.t) {
      await sql`delete from skills_db.settings where key = 'app_role'`.execute(db)
    }
  },
}

/** Grants `privileges` on `table` to the application role; `down` revokes everything on it. */
export function grant(table: string, privileges: readonly ('select' | 'insert' | 'update' | 'delete')[]): Step {
  return {
    name: `grant ${privileges.join(', ')} on ${table}`,
    async up(db) {
      const role = await appRoleName(db)
      await withLockRetry(db, table, async (trx) => {
        await sql`revoke all on ${sql.table(table)} from ${sql.id(role)}`.execute(trx)
        await sql`grant ${sql.raw(privileges.join(', '))} on ${sql.table(table)} to ${sql.id(role)}`.execute(trx)
      })
    },
    async down(db) {
      const role = await appRoleName(db)
      await withLockRetry(db, table, (trx) => sql`revoke all on ${sql.table(table)} from ${sql.id(role)}`.execute(trx))
    },
  }
}
