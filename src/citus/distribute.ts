import { sql, type Kysely } from 'kysely'
import { appRoleName } from '../online/app-role.ts'
import { forget, readRecorded, record } from '../online/recorded-settings.ts'
import { withMigrationLock } from '../migrator/migration-lock.ts'
import type { MigrationLogger } from '../migrator/migration-logger.ts'
import { inRun, progress } from '../online/run-context.ts'
import { citusReadiness, DISTRIBUTED } from './readiness.ts'
import { CITUS_CHALLENGE, CITUS_CURRENT_TENANT, CITUS_ENTER } from './worker-tenant-context.ts'

export class DistributeRefused extends Error {
  override name = 'DistributeRefused'
}

export interface DistributeOptions {
  logger?: MigrationLogger
  /** Shards per distributed table (Citus' citus.shard_count; default: Citus's own, 32). */
  shardCount?: number
}

const FOREIGN_KEYS = 'citus_foreign_keys'

/**
 * Scales the contracted schema out on Citus: `tenants` and the tenant keys become reference tables
 * (a copy on every node), the ten tenant tables are distributed by tenant_id in one colocation
 * group (a tenant's rows of every table on one node), and the tenant context becomes one the
 * workers can check (worker-tenant-context.ts). Refuses, changing nothing, without the citus
 * extension, or while the readiness check finds anything (run the contract phase first).
 *
 * Idempotent, and a rerun after a kill completes: each table is distributed once, and the foreign
 * keys between tenant tables, which must be dropped for Citus to distribute the tables in order,
 * are recorded before they are dropped and added back after.
 */
export async function distribute(db: Kysely<any>, options: DistributeOptions = {}): Promise<{ distributed: string[] }> {
  return inRun(options.logger ? { logger: options.logger } : {}, () => db.connection().execute(async (conn) => {
    const { rows } = await sql<{ v: string | null }>`select extversion as v from pg_catalog.pg_extension where extname = 'citus'`.execute(conn)
    if (!rows[0]?.v) {
      throw new DistributeRefused('this database has no citus extension, and distribute needs Citus (12 or later): nothing was changed; see the README, "Scale-out on Citus"')
    }
    await sql`select pg_catalog.set_config('skills_db.all_tenants', 'on', false), pg_catalog.set_config('search_path', 'public', false),
      pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', false)`.execute(conn)
    if (options.shardCount) await sql`select pg_catalog.set_config('citus.shard_count', ${String(options.shardCount)}::text, false)`.execute(conn)
    try {
      return await withMigrationLock(conn, async () => {
        const recorded = await readRecorded(conn, FOREIGN_KEYS)
        // A run killed after dropping the foreign keys has no longer a schema that passes: finish it first.
        if (!recorded) {
          const violations = await citusReadiness(conn)
          if (violations.length > 0) {
            throw new DistributeRefused(`the schema is not ready for Citus (${violations.length} finding(s), first: ${violations[0]!.object}: ${violations[0]!.message}): nothing was changed; run the contract phase (skills-db contract), then skills-db check --citus`)
          }
        }
        const tables = await distributionOrder(conn)
        const app = await appRoleName(conn)

        // Every function the policies, triggers and defaults call must exist where they run: on every
        // node, before a table that calls it is. PL/pgSQL bodies are not resolved until they run, so
        // those go first; SQL bodies are checked when created, so those go once the reference tables
        // (which they may read) are there too, before the distributed tables.
        const functions = async (sqlLanguage: boolean) => (await sql<{ fn: string }>`
          select p.oid::regprocedure::text as fn from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
          where n.nspname in ('public', 'skills_db', 'tenant_context') and p.prokind = 'f'
            and (p.prolang = (select oid from pg_catalog.pg_language where lanname = 'sql')) = ${sqlLanguage}
            and not exists (select 1 from pg_catalog.pg_depend d where d.classid = 'pg_catalog.pg_proc'::regclass and d.objid = p.oid and d.deptype = 'e')
          order by 1`.execute(conn)).rows.map((r) => r.fn)
        const onEveryNode = async (fns: string[]) => {
          // (create_distributed_function takes a regprocedure, and text has no implicit cast to it.)
          for (const fn of fns) await sql`select create_distributed_function(${fn}::regprocedure)`.execute(conn)
          progress(`  on every node: ${fns.join(', ') || 'no function'}`)
        }
        await onEveryNode(await functions(false))

        for (const table of ['public.tenants', 'skills_db.tenant_context_keys']) {
          if (!(await isCitusTable(conn, table))) {
            await sql`select create_reference_table(${table}::regclass)`.execute(conn)
            progress(`  ${table}: a reference table`)
          }
        }

        await onEveryNode(await functions(true))

        const keys = recorded ? JSON.parse(recorded) as { table: string; name: string; definition: string }[] : await foreignKeysBetween(conn, tables)
        if (!recorded) await record(conn, FOREIGN_KEYS, JSON.stringify(keys), { replace: true })
        for (const k of keys) await sql`alter table ${sql.table(k.table)} drop constraint if exists ${sql.id(k.name)}`.execute(conn)
        const distributed: string[] = []
        // One colocation group, anchored on the table a killed run already distributed, else the first.
        const anchor = (await firstDistributed(conn, tables)) ?? tables[0]!
        for (const table of tables) {
          if (await isCitusTable(conn, `public.${table}`)) continue
          // One colocation group: a tenant's rows of every table on the same node.
          await sql`select create_distributed_table(${`public.${table}`}::regclass, 'tenant_id', colocate_with => ${table === anchor ? 'default' : anchor}::text)`.execute(conn)
          distributed.push(table)
          progress(`  ${table}: distributed by tenant_id`)
        }
        for (const k of keys) {
          const { rows: present } = await sql`select 1 from pg_catalog.pg_constraint where conname = ${k.name} and conrelid = ${`public.${k.table}`}::regclass`.execute(conn)
          if (present.length === 0) await sql`alter table ${sql.table(k.table)} add constraint ${sql.id(k.name)} ${sql.raw(k.definition)}`.execute(conn)
        }
        await forget(conn, FOREIGN_KEYS)

        // The workers check the tenant context themselves; the functions the policies call exist on every node.
        await CITUS_CHALLENGE.execute(conn)
        await CITUS_ENTER.execute(conn)
        await CITUS_CURRENT_TENANT.execute(conn)
        for (const fn of ['tenant_context.current_tenant()', 'tenant_context.challenge()', 'tenant_context.enter(text, text)']) {
          await sql`select create_distributed_function(${fn}::regprocedure)`.execute(conn)
        }
        await sql`revoke all on function tenant_context.challenge() from public`.execute(conn)
        await sql`grant execute on function tenant_context.challenge() to ${sql.id(app)}`.execute(conn)
        await sql`alter role ${sql.id(app)} set citus.propagate_set_commands = 'local'`.execute(conn)
        progress(`  tenant context: checked on every node; ${app}'s SET LOCAL commands reach the workers`)
        return { distributed }
      })
    } finally {
      await sql`rollback`.execute(conn).catch(() => {})
      await sql`reset all`.execute(conn).catch(() => {})
    }
  }))
}

async function firstDistributed(db: Kysely<any>, tables: string[]): Promise<string | undefined> {
  for (const table of tables) if (await isCitusTable(db, `public.${table}`)) return table
  return undefined
}

async function isCitusTable(db: Kysely<any>, table: string): Promise<boolean> {
  const { rows } = await sql`select 1 from pg_dist_partition where logicalrelid = ${table}::regclass`.execute(db)
  return rows.length > 0
}

/**
 * The tables to distribute, as the readiness check sees them (every table of public with a
 * tenant_id column; partitions go with their parent), parents first. distribute drops the foreign
 * keys between them before the first is distributed, so the order is a courtesy, not a need: a
 * cycle is simply broken.
 */
export async function distributionOrder(db: Kysely<any>): Promise<string[]> {
  const { rows } = await sql<{ table: string; parents: string[] }>`
    select c.relname as table,
      array(select distinct p.relname::text from pg_catalog.pg_constraint k join pg_catalog.pg_class p on p.oid = k.confrelid
        where k.contype = 'f' and k.conrelid = c.oid and k.confrelid <> c.oid and p.relnamespace = 'public'::regnamespace) as parents
    from pg_catalog.pg_class c where c.oid in ${DISTRIBUTED}
    order by 1`.execute(db)
  const ordered: string[] = []
  const seen = new Set<string>()
  const visit = (table: string) => {
    if (seen.has(table)) return
    seen.add(table)
    for (const parent of rows.find((r) => r.table === table)?.parents ?? []) if (rows.some((r) => r.table === parent)) visit(parent)
    ordered.push(table)
  }
  for (const r of rows) visit(r.table)
  return ordered
}

/** Every foreign key from one of `tables` to another, as `ALTER TABLE … ADD CONSTRAINT` takes it. */
async function foreignKeysBetween(db: Kysely<any>, tables: string[]) {
  const { rows } = await sql<{ table: string; name: string; definition: string }>`
    select c.relname as table, k.conname as name, pg_catalog.pg_get_constraintdef(k.oid) as definition
    from pg_catalog.pg_constraint k join pg_catalog.pg_class c on c.oid = k.conrelid join pg_catalog.pg_class p on p.oid = k.confrelid
    where k.contype = 'f' and c.relnamespace = 'public'::regnamespace and p.relnamespace = 'public'::regnamespace
      and not c.relispartition and c.relname = any(${tables}) and p.relname = any(${tables})
    order by 1, 2`.execute(db)
  return rows
}
