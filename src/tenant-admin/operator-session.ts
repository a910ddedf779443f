import { sql, type Kysely } from 'kysely'
import { withMigrationLock } from '../migrator/migration-lock.ts'
import { readAppliedMigrations } from '../migrator/migration-table.ts'

export class TenantAdminError extends Error {
  override name = 'TenantAdminError'
}

const LIFECYCLE_MIGRATION = '0020_tenant_lifecycle'

/**
 * Runs `fn` on one connection of `db` with the migrator's view of every tenant: it holds the
 * migration lock (so no migration changes the tables under it, and the owner's policies show every
 * tenant, 0014), on a database that has the tenant lifecycle (0020). Returns what the database has
 * applied, which is the schema an export names and an import must find.
 */
export async function asOperator<T>(db: Kysely<any>, fn: (conn: Kysely<any>, migrations: string[]) => Promise<T>): Promise<T> {
  return db.connection().execute((conn) => withMigrationLock(conn, async () => {
    const migrations = (await readAppliedMigrations(conn)).map((m) => m.name).sort()
    if (!migrations.includes(LIFECYCLE_MIGRATION)) {
      throw new TenantAdminError(`this database has no tenant lifecycle yet (migration ${LIFECYCLE_MIGRATION}): run skills-db open (before a second tenant), or skills-db latest on a database already opened`)
    }
    // On Citus, the SET LOCALs of tenant delete and import go to the nodes, whose triggers read them.
    const { rows: citus } = await sql`select 1 from pg_catalog.pg_extension where extname = 'citus'`.execute(conn)
    if (citus.length === 0) return fn(conn, migrations)
    await sql`set citus.propagate_set_commands = 'local'`.execute(conn)
    try {
      return await fn(conn, migrations)
    } finally {
      await sql`reset citus.propagate_set_commands`.execute(conn).catch(() => {})
    }
  }))
}

/** The tenant's row as the operator sees it, or an error that says how to find the right id. */
export async function tenantRow(conn: Kysely<any>, tenantId: string): Promise<{ id: string; slug: string; is_active: boolean }> {
  const { rows } = await sql<{ id: string; slug: string; is_active: boolean }>`select id, slug, is_active from public.tenants where id = ${tenantId}`.execute(conn)
  if (!rows[0]) throw new TenantAdminError(`no tenant has the id "${tenantId}": skills-db tenant list shows the ids`)
  return rows[0]
}
