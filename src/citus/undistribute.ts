import { sql, type Kysely } from 'kysely'
import type { MigrationLogger } from '../migrator/migration-logger.ts'
import { appRoleName } from '../online/app-role.ts'
import { forget, readRecorded } from '../online/recorded-settings.ts'
import { progress } from '../online/run-context.ts'
import { REPLACED_FUNCTIONS } from './distribute.ts'
import { resolverBack } from './api-key-resolver.ts'
import { CLEARING_TRIGGERS, FOREIGN_KEYS, referencesBack } from './references-during-distribute.ts'
import { citusLeftoversDropped, onlineWitnessOff, rowSecurityForcedAgain } from './online-distribution.ts'
import { isSuperuser, onCoordinator, step, withoutTriggers } from './steps.ts'

/** How {@link undistribute} reports, and how long it lets the app's requests wait for it. Every option has a default. */
export interface UndistributeOptions {
  /** Where the run reports its progress, a line per step (`console` will do); default: nowhere. */
  logger?: MigrationLogger
  /** How long one statement waits for a lock before it is retried, in ms (default 50): the app's requests queue behind it no longer. */
  lockTimeoutMs?: number
  /** How long a step retries a busy lock before the run stops and names the sessions holding it, in ms (default 120000). */
  lockRetryBudgetMs?: number
}

/** skills-db's schemas: the tables distribute put into Citus's metadata are all in them. */
const OURS = ['public', 'skills_db', 'tenant_context']

/**
 * Undoes `distribute`: every table back to a plain table of this node with all its rows, keys,
 * policies, triggers and grants (Citus's undistribute_table, with the connected tables), the
 * columns' statistics targets as they were, the single-node tenant context functions distribute
 * recorded, the keys' per-node copies and the app role's Citus setting gone. The schema is then
 * the contracted one again (test/support/citus-suite.ts compares the catalog), and `distribute`
 * can run again. The citus extension stays.
 *
 * Idempotent: a rerun after a kill does what is left. Each table moves in one transaction of its
 * own, with its triggers off (the copy would fire the audit stamp on every row again), and the
 * tenant context goes back last, once no table is distributed.
 *
 * @example
 * const { undistributed } = await undistribute(db, { logger: console, lockTimeoutMs: 100 })
 */
export async function undistribute(db: Kysely<any>, options: UndistributeOptions = {}): Promise<{
  /** The tables this run made plain tables of this node again; empty when none was distributed. */
  undistributed: string[]
}> {
  return onCoordinator(db, options, { noCitus: 'this database has no citus extension, so nothing is distributed: nothing was changed', unsafeTriggers: true, watchWorkers: true }, async (conn) => {
    // The statistics targets as distribute left them (0015 turned statistics off on the columns the
    // app role reads); undistribute_table makes new tables, which would keep statistics again.
    const { rows: targets } = await sql<{ table: string; column: string; target: number }>`
      select c.oid::regclass::text as table, a.attname as column, a.attstattarget as target
      from pg_catalog.pg_dist_partition p join pg_catalog.pg_class c on c.oid = p.logicalrelid
        join pg_catalog.pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
      where c.relnamespace::regnamespace::text = any(${OURS}) and a.attstattarget >= 0
      order by 1, 2`.execute(conn)
    // A distribute killed while it moved a table online: its un-FORCEd row security now, its
    // coordinator witness once no table is a Citus local table (before that, the app's requests
    // need it: dropped first, an outside review saw every update of such a table match no row).
    const app = await appRoleName(conn)
    await rowSecurityForcedAgain(conn)
    await citusLeftoversDropped(conn)
    const undistributed: string[] = []
    for (;;) {
      // One table at a time, with those it is joined to by foreign keys (Citus moves them together).
      const { rows: left } = await sql<{ table: string }>`select p.logicalrelid::regclass::text as table from pg_catalog.pg_dist_partition p
        join pg_catalog.pg_class c on c.oid = p.logicalrelid
        where c.relnamespace::regnamespace::text = any(${OURS}) order by (p.partmethod = 'n') desc, 1 limit 1`.execute(conn)
      const table = left[0]?.table
      if (!table) break
      const before = await citusTables(conn)
      await step(`${table}: back to a table of this node, with the tables its foreign keys join it to`, () =>
        withoutTriggers(conn, table, (trx) => sql`select undistribute_table(${table}::regclass, cascade_via_foreign_keys => true)`.execute(trx)))
      const after = new Set(await citusTables(conn))
      undistributed.push(...before.filter((t) => !after.has(t)))
    }
    await onlineWitnessOff(conn, app)
    for (const t of targets) {
      const { rows: now } = await sql<{ target: number }>`select attstattarget as target from pg_catalog.pg_attribute
        where attrelid = ${t.table}::regclass and attname = ${t.column}`.execute(conn)
      if (now[0] && now[0].target !== t.target) {
        await sql`alter table ${sql.raw(t.table)} alter column ${sql.id(t.column)} set statistics ${sql.lit(t.target)}`.execute(conn)
      }
    }
    if (targets.length > 0) progress(`  statistics targets as they were on ${new Set(targets.map((t) => t.table)).size} table(s)`)

    const recorded = await readRecorded(conn, REPLACED_FUNCTIONS)
    if (recorded) {
      await step('the single-node tenant context functions back', async () => {
        for (const { def } of JSON.parse(recorded) as { fn: string; def: string }[]) await sql.raw(def).execute(conn)
      })
    }
    await resolverBack(conn)
    await step('the per-node copies of the tenant keys dropped', async () => {
      await sql`select run_command_on_workers('drop table if exists tenant_context.node_keys')`.execute(conn)
      await sql`drop function if exists tenant_context.copy_keys_to_nodes()`.execute(conn)
      await sql`drop table if exists tenant_context.node_keys`.execute(conn)
    })
    await sql`alter role ${sql.id(app)} reset citus.propagate_set_commands`.execute(conn)
    if (await isSuperuser(conn)) await sql`alter role ${sql.id(app)} reset track_activities`.execute(conn)
    await forget(conn, REPLACED_FUNCTIONS)
    progress(`  tenant context: the single-node one; ${app}'s Citus setting reset`)
    // The foreign keys and clearing triggers a killed distribute dropped (without them, the app's
    // writes were not checked, and its deletes cleared and cascaded nothing). Last: a key that
    // fails its validation (a row the app wrote meanwhile names one that is not there) stops the
    // run with the app's tenant context already the single-node one, so every tenant is served
    // while the row is mended (an outside review: before, every request failed until then).
    const dropped = await readRecorded(conn, FOREIGN_KEYS)
    if (dropped || await readRecorded(conn, CLEARING_TRIGGERS)) await referencesBack(conn, dropped ? JSON.parse(dropped) : [])
    return { undistributed }
  })
}

async function citusTables(db: Kysely<any>): Promise<string[]> {
  const { rows } = await sql<{ t: string }>`select logicalrelid::regclass::text as t from pg_catalog.pg_dist_partition order by 1`.execute(db)
  return rows.map((r) => r.t)
}
