import { sql, type Kysely } from 'kysely'
import { ident } from './catalog.ts'
import { withLockRetry } from './lock-retry.ts'
import { progress } from './progress.ts'
import { forget, readRecorded, record } from './recorded-settings.ts'
import type { Step } from './step.ts'

/** Session setting through which `migrateToLatest({ appRole })` names the application role to migrations. */
export const APP_ROLE_SETTING = 'skills_db.app_role'
/** Session setting through which `migrateToLatest({ oldAppRoles })` names the single-tenant app's roles. */
export const OLD_APP_ROLES_SETTING = 'skills_db.old_app_roles'
export const DEFAULT_APP_ROLE = 'app_user'

/**
 * The application role of this database: the one recorded when it was created, so a later
 * `down` revokes from the same role. A different name asked for explicitly is an error.
 */
export async function appRoleName(db: Kysely<any>): Promise<string> {
  const { rows } = await sql<{ asked: string | null }>`
    select nullif(pg_catalog.current_setting(${APP_ROLE_SETTING}::text, true), '') as asked`.execute(db)
  const asked = rows[0]?.asked ?? null
  const recorded = (await readRecorded(db, 'app_role')) ?? null
  if (recorded && asked && asked !== recorded) {
    throw new Error(`this database's application role is ${recorded}, not ${asked}: ask for ${recorded}, or none`)
  }
  return roleName(recorded ?? asked ?? DEFAULT_APP_ROLE, 'application role')
}

/** The old app's roles named for this run (empty when none were named). */
export async function namedOldAppRoles(db: Kysely<any>): Promise<string[]> {
  const { rows } = await sql<{ v: string | null }>`select pg_catalog.current_setting(${OLD_APP_ROLES_SETTING}::text, true) as v`.execute(db)
  return (rows[0]?.v ?? '').split(',').map((r) => r.trim()).filter(Boolean).map((r) => roleName(r, 'old app role'))
}

function roleName(name: string, what: string): string {
  try {
    return ident(name)
  } catch {
    throw new Error(`${what} name "${name}" is not allowed: use lower-case letters, digits and _`)
  }
}

/** Owner of `table`, and whether row security can confine it (it cannot confine a superuser or BYPASSRLS role). */
export async function tableOwner(db: Kysely<any>, table: string): Promise<{ name: string; confinable: boolean }> {
  const { rows } = await sql<{ name: string; confinable: boolean }>`
    select r.rolname as name, not (r.rolsuper or r.rolbypassrls) as confinable
    from pg_catalog.pg_class c join pg_catalog.pg_roles r on r.oid = c.relowner
    where c.oid = pg_catalog.to_regclass(${table}::text)`.execute(db)
  if (!rows[0]) throw new Error(`table ${table} does not exist`)
  return rows[0]
}

/** The owner of `table` as a policy's role list: empty when row security cannot confine it anyway. */
export function ownerIfConfinable(table: string): (db: Kysely<any>) => Promise<string[]> {
  return async (db) => {
    const owner = await tableOwner(db, table)
    return owner.confinable ? [owner.name] : []
  }
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

async function createLoginRoleIfMissing(db: Kysely<any>, role: string): Promise<boolean> {
  const { rows } = await sql`select 1 from pg_catalog.pg_roles where rolname = ${role}`.execute(db)
  if (rows.length > 0) return false
  await sql`create role ${sql.id(role)} login nosuperuser nobypassrls nocreatedb nocreaterole noinherit`.execute(db)
  return true
}

type Privilege = 'select' | 'insert' | 'update' | 'delete'

async function grantOn(db: Kysely<any>, table: string, role: string, privileges: readonly Privilege[]): Promise<void> {
  await withLockRetry(db, table, async (trx) => {
    await sql`revoke all on ${sql.table(table)} from ${sql.id(role)}`.execute(trx)
    await sql`grant ${sql.raw(privileges.join(', '))} on ${sql.table(table)} to ${sql.id(role)}`.execute(trx)
  })
}

/** Grants `privileges` on `table` to the application role; `down` revokes everything on it. */
export function grant(table: string, privileges: readonly Privilege[]): Step {
  return {
    name: `grant ${privileges.join(', ')} on ${table}`,
    up: async (db) => grantOn(db, table, await appRoleName(db), privileges),
    async down(db) {
      const role = await appRoleName(db)
      await withLockRetry(db, table, (trx) => sql`revoke all on ${sql.table(table)} from ${sql.id(role)}`.execute(trx))
    },
  }
}

/**
 * The roles the single-tenant app may connect as while it keeps running: the tables' owner, the
 * roles named for the run (created, with the app's privileges, when missing), and every role that
 * already holds privileges on the tables. Row security confines them to the default tenant (see
 * the policies that read {@link oldAppRoles}). Superusers and BYPASSRLS roles are left out: row
 * security cannot confine them. Recorded, so the policies and a later `down` use the same list.
 */
export function oldAppLane(tables: readonly string[], privileges: readonly Privilege[]): Step {
  return {
    name: 'old app roles',
    async up(db) {
      const appRoleNow = await appRoleName(db)
      const named = await namedOldAppRoles(db)
      const created: string[] = (await readRecorded(db, 'old_app_roles_created'))?.split(',').filter(Boolean) ?? []
      for (const role of named) {
        if (await createLoginRoleIfMissing(db, role)) created.push(role)
      }
      if (created.length > 0) await record(db, 'old_app_roles_created', [...new Set(created)].join(','), { replace: true })
      for (const role of created) for (const table of tables) await grantOn(db, table, role, privileges)
      const { rows } = await sql<{ role: string; how: string }>`
        with candidates as (
          select r.oid, 1 as rank, 'named for this run' as how from pg_catalog.pg_roles r where r.rolname = any(${named}::text[])
          union select c.relowner, 2, 'owner of the tables' from pg_catalog.pg_class c where c.oid = any(${tables.map((t) => `public.${t}`)}::regclass[])
          union select a.grantee, 3, 'has privileges on the tables' from pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) a
            where c.oid = any(${tables.map((t) => `public.${t}`)}::regclass[]) and a.grantee not in (0, c.relowner)
              and a.privilege_type in ('SELECT', 'INSERT', 'UPDATE', 'DELETE')
        )
        select distinct on (r.rolname) r.rolname as role, k.how
        from candidates k join pg_catalog.pg_roles r on r.oid = k.oid
        where not r.rolsuper and not r.rolbypassrls and r.rolname <> ${appRoleNow}
        order by r.rolname, k.rank`.execute(db)
      await record(db, 'old_app_roles', rows.map((r) => r.role).join(','), { replace: true })
      progress(`  old app roles, confined to the default tenant: ${rows.map((r) => `${r.role} (${r.how})`).join('; ') || 'none'}`)
    },
    async down(db) {
      const created = (await readRecorded(db, 'old_app_roles_created'))?.split(',').filter(Boolean) ?? []
      for (const role of created) {
        for (const table of tables) await withLockRetry(db, table, (trx) => sql`revoke all on ${sql.table(table)} from ${sql.id(role)}`.execute(trx))
      }
      await forget(db, 'old_app_roles_created')
      await forget(db, 'old_app_roles')
    },
  }
}

/** The roles {@link oldAppLane} recorded (empty before it ran). */
export async function oldAppRoles(db: Kysely<any>): Promise<string[]> {
  return ((await readRecorded(db, 'old_app_roles')) ?? '').split(',').filter(Boolean)
}
