import { sql, type Kysely } from 'kysely'
import { withMigrationLock } from '../migrator/migration-lock.ts'
import { readAppliedMigrations } from '../migrator/migration-table.ts'
import { HOLDER_GONE, lockHolders, PROJECT_TABLES, STRONG_LOCKS } from '../online/lock-holders.ts'
import { run } from '../online/run-context.ts'

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
  return db.connection().execute((conn) => withMigrationLock(conn, () => boundedWaits(conn, () => operate(conn, fn))))
}

/**
 * Every statement of the operator's waits for a lock at most the run's lock retry budget (120 s
 * unless `--lock-retry-budget-ms` says otherwise), then stops in one line naming the sessions that
 * hold the tenant tables: it holds the migration lock meanwhile, and an outside review had list,
 * suspend, import and the lookup of a slug wait with no end behind the app role's LOCK TABLE.
 */
async function boundedWaits<T>(conn: Kysely<any>, fn: () => Promise<T>): Promise<T> {
  const budgetMs = run().lockRetryBudgetMs
  await sql`select pg_catalog.set_config('lock_timeout', ${`${budgetMs}ms`}::text, false)`.execute(conn)
  try {
    return await fn()
  } catch (error) {
    if ((error as { code?: string }).code !== '55P03') throw error
    await sql`rollback`.execute(conn).catch(() => {})
    throw new TenantAdminError(`gave up after ${budgetMs / 1000} s waiting for a lock, held by ${await strongHolders(conn)}: end that session, or run the command again once it has ended`)
  } finally {
    await sql`reset lock_timeout`.execute(conn).catch(() => {})
  }
}

/**
 * The other sessions holding a lock stronger than a row write's on `tables`, or on any table of
 * public or skills_db: the sessions to end.
 */
async function strongHolders(conn: Kysely<any>, tables?: readonly string[]): Promise<string> {
  const relations = tables
    ? sql`select unnest(${[...tables]}::regclass[])`
    : PROJECT_TABLES
  // None: then a row's lock it waited for (a SELECT … FOR UPDATE, an uncommitted write of the same
  // key), held by one of the sessions that lock or write rows of those tables (an outside review
  // had "a session that has since finished" named while it still ran).
  return await lockHolders(conn, relations, STRONG_LOCKS)
    ?? await lockHolders(conn, relations, ['RowShareLock', 'RowExclusiveLock']).then((who) => who && `one of ${who}`)
    ?? HOLDER_GONE
}

async function operate<T>(conn: Kysely<any>, fn: (conn: Kysely<any>, migrations: string[]) => Promise<T>): Promise<T> {
  {
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
  }
}

/** The tenant's row as the operator sees it, or an error that says how to find the right id. */
export async function tenantRow(conn: Kysely<any>, tenantId: string): Promise<{ id: string; slug: string; is_active: boolean }> {
  const { rows } = await sql<{ id: string; slug: string; is_active: boolean }>`select id, slug, is_active from public.tenants where id = ${tenantId}`.execute(conn)
  if (!rows[0]) throw new TenantAdminError(`no tenant has the id "${tenantId}": skills-db tenant list shows the ids`)
  return rows[0]
}

/** A tenant listed in skills_db.tenant_removals: a delete began and has not finished (it was stopped or killed). */
export async function beingDeleted(conn: Kysely<any>, tenantId: string): Promise<boolean> {
  const { rows } = await sql`select 1 from skills_db.tenant_removals where tenant_id = ${tenantId}`.execute(conn)
  return rows.length > 0
}

/**
 * Locks `tables` for reading (ACCESS SHARE: in the way of nothing but DDL and LOCK TABLE … ACCESS
 * EXCLUSIVE) in the transaction open on `conn`, waiting at most `budgetMs` (the run's lock retry
 * budget, 120 s unless `--lock-retry-budget-ms` says otherwise), and leaves that lock
 * timeout on the transaction: an operator's read never waits with no end and no word behind a
 * session that holds a table (an outside review left `tenant export` hung behind the app role's
 * LOCK TABLE, holding the migration lock). On timeout, one line naming the sessions in the way.
 */
export async function readLocked(conn: Kysely<any>, tables: readonly string[], budgetMs = run().lockRetryBudgetMs): Promise<void> {
  await sql`select pg_catalog.set_config('lock_timeout', ${`${budgetMs}ms`}::text, true)`.execute(conn)
  await sql`savepoint read_locked`.execute(conn)
  try {
    await sql`lock table ${sql.join(tables.map((t) => sql.table(t)))} in access share mode`.execute(conn)
  } catch (error) {
    if ((error as { code?: string }).code !== '55P03') throw error
    await sql`rollback to savepoint read_locked`.execute(conn)
    throw new TenantAdminError(`gave up after ${budgetMs / 1000} s waiting for a table to read, held by ${await strongHolders(conn, tables)}: end that session, or run the command again once it has ended`)
  }
}
