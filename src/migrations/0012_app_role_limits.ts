import { sql, type Kysely } from 'kysely'
import { appRoleName } from '../online/app-role.ts'
import { oldAppRoles } from '../online/old-app-roles.ts'
import { progress } from '../online/run-context.ts'
import { forget, readRecorded, record } from '../online/recorded-settings.ts'
import { databaseFunction } from '../online/database-function.ts'
import { applySteps, revertSteps, type Step } from '../online/step.ts'

// Frozen: this migration's own facts, as of when it was written (see README.md in this folder).

/*
 * What the app role may do, narrowed where an outside review found it could hurt other tenants: no
 * temporary tables (a flood of them exhausts the lock table for everyone), and API keys resolved
 * within one tenant (another tenant could otherwise disable a key by storing its hash).
 */

const REVOKED = 'temporary_revoked_from_public'
const GRANTED = 'temporary_granted_to'

/**
 * Every role may create temporary tables in a new database (TEMPORARY is PUBLIC's). The app needs
 * none, and SQL injected as the app role could create thousands, filling the shared lock table
 * until other sessions fail with "out of shared memory". So TEMPORARY goes from PUBLIC, and comes
 * back, granted directly, to the roles that may need it: the single-tenant app's, the tables' owner
 * and the migrator. Other roles that use temporary tables need `GRANT TEMPORARY ON DATABASE`.
 * Only the database's owner (or a superuser) can take it from PUBLIC: anyone else is told what to run.
 */
const withoutTemporary: Step = {
  name: 'TEMPORARY on the database: not PUBLIC\'s, not the app role\'s',
  async up(db) {
    const { rows } = await sql<{ db: string; open: boolean; owner: string; may: boolean }>`
      select pg_catalog.current_database() as db,
        pg_catalog.has_database_privilege('public', pg_catalog.current_database(), 'TEMPORARY') as open,
        (select r.rolname from pg_catalog.pg_database d join pg_catalog.pg_roles r on r.oid = d.datdba where d.datname = pg_catalog.current_database()) as owner,
        (select r.rolsuper or pg_catalog.pg_has_role(current_user, d.datdba, 'USAGE')
           from pg_catalog.pg_roles r, pg_catalog.pg_database d where r.rolname = current_user and d.datname = pg_catalog.current_database()) as may`.execute(db)
    const { db: database, open, owner, may } = rows[0]!
    const app = await appRoleName(db)
    const keep = [...new Set([...(await oldAppRoles(db)), await tablesOwner(db), (await sql<{ me: string }>`select current_user as me`.execute(db)).rows[0]!.me])]
      .filter((role) => role !== app)
    if (open) {
      if (!may) {
        throw new Error(`the app role ${app} may create temporary tables in ${database} (TEMPORARY is granted to PUBLIC), which SQL injected as it could use to exhaust the lock table; ` +
          `only the database's owner can take it from PUBLIC: as ${owner}, run REVOKE TEMPORARY ON DATABASE ${database} FROM PUBLIC; GRANT TEMPORARY ON DATABASE ${database} TO ${keep.join(', ')}; then run the migrator again`)
      }
      // Recorded first: a run killed before the REVOKE gives nothing back it did not take.
      await record(db, REVOKED, 'on', { replace: true })
    }
    const granted = new Set((await readRecorded(db, GRANTED) ?? '').split(',').filter(Boolean))
    for (const role of keep) {
      const { rows: has } = await sql<{ has: boolean; direct: boolean }>`
        select exists (select 1 from pg_catalog.pg_database d, pg_catalog.aclexplode(d.datacl) a join pg_catalog.pg_roles r on r.oid = a.grantee
                       where d.datname = pg_catalog.current_database() and r.rolname = ${role} and a.privilege_type = 'TEMPORARY') as direct,
          (select rolsuper from pg_catalog.pg_roles where rolname = ${role}) as has`.execute(db)
      if (has[0]?.has || has[0]?.direct) continue
      granted.add(role)
      await record(db, GRANTED, [...granted].join(','), { replace: true })
      await sql`grant temporary on database ${sql.id(database)} to ${sql.id(role)}`.execute(db)
    }
    if (open) await sql`revoke temporary on database ${sql.id(database)} from public`.execute(db)
    if (granted.size > 0) progress(`  TEMPORARY on ${database} granted directly to ${[...granted].join(', ')}`)
  },
  async down(db) {
    const { rows } = await sql<{ db: string }>`select pg_catalog.current_database() as db`.execute(db)
    const database = rows[0]!.db
    if ((await readRecorded(db, REVOKED)) === 'on') await sql`grant temporary on database ${sql.id(database)} to public`.execute(db)
    for (const role of ((await readRecorded(db, GRANTED)) ?? '').split(',').filter(Boolean)) {
      const { rows: exists } = await sql`select 1 from pg_catalog.pg_roles where rolname = ${role}`.execute(db)
      if (exists.length > 0) await sql`revoke temporary on database ${sql.id(database)} from ${sql.id(role)}`.execute(db)
    }
    await forget(db, GRANTED)
    await forget(db, REVOKED)
  },
}

async function defaultTenantId(db: Kysely<any>): Promise<string> {
  const { rows } = await sql<{ id: string }>`select id from tenants where slug = 'default'`.execute(db)
  if (!rows[0]) throw new Error(`the default tenant (slug 'default') is missing from tenants; 0002_add_tenants creates it: restore that row`)
  return rows[0].id
}

/**
 * API keys are resolved within one tenant: the one the presented key names (an app issues keys that
 * carry their tenant), or the default tenant for the keys the single-tenant app issued. A key hash
 * another tenant stored, with a key of its own or a copy of this one, changes nothing here (it
 * made 0010's resolver answer nobody), and on Citus the lookup goes to that tenant's shard.
 */
const tenantResolver = (defaultTenant: string) => databaseFunction({
  signature: 'tenant_context.resolve_api_key(text, text)',
  executeBy: 'app role',
  definition: sql`
    create or replace function tenant_context.resolve_api_key(tenant text, presented_key_hash text)
    returns table (tenant_id text, user_id text)
    language plpgsql volatile security definer
    set search_path = pg_catalog, pg_temp
    as $$
    declare
      was text := current_setting('skills_db.all_tenants', true);
      wanted text := coalesce(tenant, ${sql.lit(defaultTenant)});
    begin
      perform set_config('skills_db.all_tenants', 'on', true);
      return query
        select k.tenant_id, k.user_id from public.api_keys k
        where k.tenant_id = wanted and k.key_hash = presented_key_hash
          and k.revoked_at is null
          and (k.expires_at is null or k.expires_at > now())
          and exists (select 1 from public.tenants t where t.id = k.tenant_id and t.is_active);
      perform set_config('skills_db.all_tenants', coalesce(was, ''), true);
    end $$`,
})

/** 0005's resolver looks a hash up in every tenant: the app role no longer calls it. */
const globalResolverRetired: Step = {
  name: 'public.resolve_api_key(text) no longer the app role\'s',
  async up(db) {
    await sql`revoke execute on function public.resolve_api_key(text) from ${sql.id(await appRoleName(db))}`.execute(db)
  },
  async down(db) {
    await sql`grant execute on function public.resolve_api_key(text) to ${sql.id(await appRoleName(db))}`.execute(db)
  },
}

async function tablesOwner(db: Kysely<any>): Promise<string> {
  const { rows } = await sql<{ owner: string }>`
    select r.rolname as owner from pg_catalog.pg_class c join pg_catalog.pg_roles r on r.oid = c.relowner
    where c.oid = 'public.tenants'::regclass`.execute(db)
  return rows[0]!.owner
}

async function steps(db: Kysely<any>): Promise<Step[]> {
  return [withoutTemporary, tenantResolver(await defaultTenantId(db)), globalResolverRetired]
}

export const up = async (db: Kysely<any>) => applySteps(db, await steps(db))
export const down = async (db: Kysely<any>) => revertSteps(db, await steps(db))
