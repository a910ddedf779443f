import { sql, type Kysely } from 'kysely'
import { appRoleName } from '../online/app-role.ts'
import { resolverWithoutJoin } from './api-key-resolver.ts'
import { readRecorded, record } from '../online/recorded-settings.ts'
import type { MigrationLogger } from '../migrator/migration-logger.ts'
import { lockInOrder, withLockRetry } from '../online/lock-retry.ts'
import { progress } from '../online/run-context.ts'
import { citusLeftoversDropped, copyPlan, distributeOnline, onlineDistribution, onlineWitnessOff, onlineWitnessOn, rowSecurityForcedAgain, sizeOf } from './online-distribution.ts'
import { citusReadiness, DISTRIBUTED } from './readiness.ts'
import { clearingTriggersOff, FOREIGN_KEYS, referencesBack } from './references-during-distribute.ts'
import { DistributeRefused, exists, isDistributed, isReference, isSuperuser, onCoordinator, step, withoutTriggers } from './steps.ts'
export { DistributeFailed, DistributeRefused } from './steps.ts'
import { CITUS_CHALLENGE, CITUS_COPY_KEYS, CITUS_CURRENT_TENANT, CITUS_ENTER, CITUS_NODE_KEYS, CITUS_SESSION_ENTER } from './worker-tenant-context.ts'


/** How {@link distribute} reports, and how long it lets the app's requests wait for it. Every option has a default. */
export interface DistributeOptions {
  /** Where the run reports its progress, a line per step (`console` will do); default: nowhere. */
  logger?: MigrationLogger
  /** How long one statement waits for a lock before it is retried, in ms (default 50): the app's requests queue behind it no longer. */
  lockTimeoutMs?: number
  /** How long a step retries a busy lock before the run stops and names the sessions holding it, in ms (default 120000). */
  lockRetryBudgetMs?: number
  /** Shards per distributed table (Citus' citus.shard_count; default: Citus's own, 32). */
  shardCount?: number
  /**
   * Tables this large or larger, in bytes, are distributed online where the cluster allows it
   * (create_distributed_table_concurrently: the app's writes held only for its last catch-up);
   * smaller ones by a blocking copy, which holds them for a few ms where Citus's replication takes
   * seconds to set up per table. Default ONLINE_FROM_BYTES; false: every table by a blocking copy.
   */
  onlineFromBytes?: number | false
}

/**
 * The default of onlineFromBytes, 1 MB: a blocking copy of less holds the table's writes for a few
 * ms; at scale 1 (1M usage_events) the tables above it held them for up to 17.8 s.
 */
export const ONLINE_FROM_BYTES = 1 << 20

/** The single-node tenant-context functions distribute replaced, as `[{ fn, def }]`: what undistribute puts back. */
export const REPLACED_FUNCTIONS = 'citus_replaced_functions'
export const TENANT_CONTEXT_FUNCTIONS = ['tenant_context.current_tenant()', 'tenant_context.challenge()', 'tenant_context.enter(text, text)']
/** 0019's entry with the session's challenge: replaced too (not distributed: it only refuses on Citus). */
const SESSION_ENTER = 'tenant_context.enter(text, text, text)'

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
 *
 * @example
 * const { distributed } = await distribute(db, { logger: console })
 * console.log(distributed.length === 0 ? 'already distributed' : `distributed ${distributed.join(', ')}`)
 */
export async function distribute(db: Kysely<any>, options: DistributeOptions = {}): Promise<{
  /** The tables this run distributed by tenant_id (without `public.`); empty when a run before had done it all. */
  distributed: string[]
}> {
  return onCoordinator(db, options, {
    noCitus: 'this database has no citus extension, and distribute needs Citus (12 or later): nothing was changed; see docs/citus.md, "Scale-out on Citus"',
    unsafeTriggers: true,
    watchWorkers: true,
    ...(options.shardCount ? { settings: { 'citus.shard_count': String(options.shardCount) } } : {}),
  }, async (conn) => {
    const recorded = await readRecorded(conn, FOREIGN_KEYS)
    // A run killed after dropping the foreign keys has no longer a schema that passes: finish it first.
    if (!recorded) {
      const violations = await citusReadiness(conn)
      if (violations.length > 0) {
        throw new DistributeRefused(`the schema is not ready for Citus (${violations.length} finding(s), first: ${violations[0]!.object}: ${violations[0]!.message}): nothing was changed; run the contract phase (skills-db contract), then skills-db check --citus`)
      }
    }
    // Each table after the tables its triggers touch (distributionOrder).
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
      await step(`on every node: ${fns.join(', ') || 'no function'}`, async () => {
        for (const fn of fns) await sql`select create_distributed_function(${fn}::regprocedure)`.execute(conn)
      })
    }
    await resolverWithoutJoin(conn)
    await onEveryNode(await functions(false))

    // The foreign keys between tables not yet both distributed, and those to tenants while it is not
    // yet a reference table (none, on a rerun after a completed run): dropped before tenants becomes
    // one, added back once every table is distributed. With them in place, the app's requests
    // deadlocked while distribute ran: a local table's key check locks the reference table's shard
    // in Share mode, a distributed table's write in Row Exclusive, and two requests each holding the
    // one waited for the other; and with the coordinator in the metadata, Citus made every table
    // referencing tenants a Citus local table, whose shard on the coordinator saw no tenant context.
    // (Not those between the tables that go TOGETHER: dropped and added back inside that one
    // transaction, they are never off for the app.)
    const tablesLeft = await asyncFilter(tables, async (t) => !(await isDistributed(conn, `public.${t}`)))
    const keys = recorded ? JSON.parse(recorded) as { table: string; name: string; definition: string }[]
      : (await foreignKeysBetween(conn, tablesLeft, (await isReference(conn, 'public.tenants')) ? [] : ['tenants']))
        .filter((k) => !(TOGETHER.includes(`public.${k.table}`) && TOGETHER.includes(`public.${k.parent}`)))
    if (!recorded) await record(conn, FOREIGN_KEYS, JSON.stringify(keys), { replace: true })
    // Only while a table is left to distribute: a rerun after a kill at the end (every table
    // distributed, the keys and triggers on their way back) dropped them again, and stopped by its
    // lock budget, left the app's writes unchecked that were checked before it (an outside review).
    if (tablesLeft.length > 0) {
      for (const k of keys) await step(`drop foreign key ${k.table}.${k.name} (added back below)`, () => dropForeignKey(conn, k))
    }
    await clearingTriggersOff(conn, tablesLeft.length)

    await step('the tenant context by the session\'s challenge (0019): off, the app asks per transaction', () => sessionEntryOff(conn))
    for (const table of ['public.tenants', 'skills_db.tenant_context_keys']) {
      if (!(await isReference(conn, table))) {
        await step(`${table}: a reference table`, () => withoutTriggers(conn, table, (trx) => sql`select create_reference_table(${table}::regclass)`.execute(trx)))
      }
    }

    await onEveryNode(await functions(true))
    const distributed: string[] = []
    // One colocation group, anchored on the table a killed run already distributed, else the first.
    // (Hash-distributed only: with the coordinator in the metadata, create_reference_table('tenants')
    // has made the tables that reference it Citus local tables, which are in pg_dist_partition too.)
    // The audit chain's heads go with the tenant's audit rows: the stamp trigger, run on the shard
    // of audit_logs, takes the tenant's head in the colocated shard on the same node.
    // site_settings first: once it is distributed the tenant context every node checks can take
    // over, and the app's requests go on working while the others follow (tenantContextOnEveryNode).
    // Then TOGETHER, in one transaction, before any other table the app writes.
    const qualified = ['public.site_settings', ...(await exists(conn, CHAIN_HEADS) ? [CHAIN_HEADS] : []),
      ...tables.filter((t) => t !== 'site_settings').map((t) => `public.${t}`)]
    const together = TOGETHER.filter((t) => qualified.includes(t))
    const anchor = (await firstDistributed(conn, qualified)) ?? qualified[0]!
    const onlineFrom = options.onlineFromBytes ?? ONLINE_FROM_BYTES
    const online = onlineFrom === false ? 'with the app\'s writes held: online copies turned off' : await onlineDistribution(conn)
    let witnessing = false
    await rowSecurityForcedAgain(conn)
    for (const table of ['public.site_settings', ...qualified.filter((t) => t !== 'public.site_settings' && !together.includes(t))]) {
      if (!(await isDistributed(conn, table))) {
        const name = table.replace(/^public\./, '')
        const colocateWith = table === anchor ? 'default' : anchor
        const plan = table === anchor ? { online: false, why: 'with the app\'s writes held: the first, the one the tenant context every node checks starts from' }
          : online === true && onlineFrom !== false ? await copyPlan(conn, table, onlineFrom) : { online: false, why: online as string }
        const why = plan.why
        if (plan.online) {
          if (!witnessing) await step('the coordinator witnesses each request\'s tenant while tables move online', () => onlineWitnessOn(conn, app))
          witnessing = true
          await step(`${name}: distribute by tenant_id, the app's writes going on (${why})`, () => distributeOnline(conn, table, colocateWith, app))
        } else {
          await step(`${name}: distribute by tenant_id (${why})`, () => withoutTriggers(conn, table, (trx) =>
            sql`select create_distributed_table(${table}::regclass, 'tenant_id', colocate_with => ${colocateWith}::text)`.execute(trx)))
        }
        distributed.push(name)
      }
      if (table === 'public.site_settings') {
        await tenantContextOnEveryNode(conn, app)
        const left = await asyncFilter(together, async (t) => !(await isDistributed(conn, t)))
        if (left.length > 0) {
          const names = left.map((t) => t.replace(/^public\./, ''))
          await step(`${names.join(', ')}: distribute by tenant_id in one transaction, the foreign keys between them dropped and added back in it (with the app's writes held: the audit triggers read and write these across tables, which Citus refuses while some are distributed and some not; a deleted user's API keys go with it at once)`,
            () => withoutTriggers(conn, left, async (trx) => {
              const { rows: between } = await sql<{ table: string; name: string; definition: string }>`
                select k.conrelid::regclass::text as table, k.conname as name, pg_catalog.pg_get_constraintdef(k.oid) as definition
                from pg_catalog.pg_constraint k where k.contype = 'f' and k.conrelid = any(${left}::regclass[]) and k.confrelid = any(${left}::regclass[])
                order by 1, 2`.execute(trx)
              // Citus distributes the tables of one transaction over one connection per node, as
              // the keys added back after them need.
              await sql`select pg_catalog.set_config('citus.multi_shard_modify_mode', 'sequential', true)`.execute(trx)
              for (const k of between) await sql`alter table ${sql.raw(k.table)} drop constraint ${sql.id(k.name)}`.execute(trx)
              await sql`select create_distributed_table(t::regclass, 'tenant_id', colocate_with => ${anchor}::text)
                from unnest(${left}::text[]) with ordinality u(t, i) order by i`.execute(trx)
              for (const k of between) await sql`alter table ${sql.raw(k.table)} add constraint ${sql.id(k.name)} ${sql.raw(k.definition)}`.execute(trx)
            }))
          distributed.push(...names)
        }
      }
    }
    await onlineWitnessOff(conn, app)
    // The old shards of the online copies are the coordinator's copies of their rows.
    let freed = await citusLeftoversDropped(conn)
    // The clearing triggers, then the keys NOT VALID, the rows deleted meanwhile swept, the keys
    // validated (referencesBack); a rerun does what a kill left.
    await referencesBack(conn, keys)

    // The rows were copied into the shards; the coordinator's own copy is dead weight (and a
    // second copy of every tenant's data on a node that does not serve it).
    const guarded = (await sql<{ t: string }>`select tgrelid::regclass::text as t from pg_catalog.pg_trigger
      where tgname = 'no_truncate' and tgrelid = any(${qualified}::regclass[]) order by 1`.execute(conn)).rows.map((r) => `public.${r.t}`)
    for (const table of qualified) {
      const before = await localSize(conn, table)
      if (before === 0) continue
      // audit_logs and audit_signatures refuse TRUNCATE to everyone: held off for this one (which
      // cascades from audit_logs to audit_signatures), in one transaction. It empties the
      // coordinator's shells only: the shards keep every row.
      await step(`${table.replace(/^public\./, '')}: truncate the coordinator's copy of the rows`, () => withLockRetry(conn, table, async (trx) => {
        for (const t of guarded) await sql`alter table ${sql.table(t)} disable trigger no_truncate`.execute(trx)
        await sql`select truncate_local_data_after_distributing_table(${table}::regclass)`.execute(trx)
        for (const t of guarded) await sql`alter table ${sql.table(t)} enable always trigger no_truncate`.execute(trx)
      }))
      freed += before - await localSize(conn, table)
    }
    progress(`  the coordinator's copies of the rows removed: ${sizeOf(freed)} freed`)

    return { distributed }
  })
}

async function asyncFilter<T>(items: T[], keep: (item: T) => Promise<boolean>): Promise<T[]> {
  const kept: T[] = []
  for (const item of items) if (await keep(item)) kept.push(item)
  return kept
}


/** The single-node tenant context functions, for undistribute to put back (recorded once: a rerun finds Citus's). */
async function singleNodeFunctionsRecorded(db: Kysely<any>): Promise<void> {
  if (await readRecorded(db, REPLACED_FUNCTIONS)) return
  const { rows: defs } = await sql<{ fn: string; def: string }>`select p.oid::regprocedure::text as fn, pg_catalog.pg_get_functiondef(p.oid) as def
    from pg_catalog.pg_proc p where p.oid = any(array[${sql.join([...TENANT_CONTEXT_FUNCTIONS, SESSION_ENTER].map((f) => sql`pg_catalog.to_regprocedure(${f})`))}]) order by 1`.execute(db)
  await record(db, REPLACED_FUNCTIONS, JSON.stringify(defs), { replace: true })
}

/**
 * 0019's entry by the session's challenge, replaced by its refusal on Citus (recorded first) before
 * `tenants` and the tenant keys become reference tables: its one join of the two failed now and
 * then in between, on a cluster without the coordinator in the metadata (Citus's "could not find
 * the intermediate result file", in 2 runs of 4 under the app's load). From here on a connection
 * that knew its session's challenge is refused as stale and asks again, session_challenge()
 * answers NULL (the record), and the app enters per transaction, as on Citus. Idempotent.
 */
async function sessionEntryOff(db: Kysely<any>): Promise<void> {
  await singleNodeFunctionsRecorded(db)
  const { rows } = await sql<{ f: string | null }>`select pg_catalog.to_regprocedure(${SESSION_ENTER})::text as f`.execute(db)
  if (rows[0]?.f) await CITUS_SESSION_ENTER.execute(db)
}

/**
 * The tenant context every node checks (worker-tenant-context.ts), in place of the single-node one
 * (recorded first, for undistribute): done as soon as site_settings, the table challenge() reads to
 * make its transaction a distributed one, is distributed, so the app's requests keep working while
 * the other tables are distributed after it. Idempotent.
 */
async function tenantContextOnEveryNode(db: Kysely<any>, app: string): Promise<void> {
  // The workers check the tenant context themselves, with the keys in a table of their own; the
  // functions the policies call exist on every node.
  await step('the tenant keys on every node', async () => {
    await sql`select pg_catalog.set_config('citus.enable_ddl_propagation', 'off', false)`.execute(db)
    await CITUS_NODE_KEYS.execute(db)
    await sql`revoke all on tenant_context.node_keys from public`.execute(db)
    await sql`select pg_catalog.set_config('citus.enable_ddl_propagation', 'on', false)`.execute(db)
    await CITUS_COPY_KEYS.execute(db)
    await sql`revoke all on function tenant_context.copy_keys_to_nodes() from public`.execute(db)
    await sql`select tenant_context.copy_keys_to_nodes()`.execute(db)
  })
  await singleNodeFunctionsRecorded(db)
  // In one transaction: a request that got the new challenge gets the new enter() too, and the new
  // enter() takes the old challenge's signature (a request that asked for it just before); a
  // request that entered by the old enter() is known by its mark (current_tenant()).
  await db.transaction().execute(async (trx) => {
    await CITUS_CHALLENGE.execute(trx)
    await CITUS_ENTER.execute(trx)
    await CITUS_CURRENT_TENANT.execute(trx)
  })
  for (const fn of TENANT_CONTEXT_FUNCTIONS) {
    await sql`select create_distributed_function(${fn}::regprocedure)`.execute(db)
  }
  await sql`revoke all on function tenant_context.challenge() from public`.execute(db)
  await sql`grant execute on function tenant_context.challenge() to ${sql.id(app)}`.execute(db)
  await sql`alter role ${sql.id(app)} set citus.propagate_set_commands = 'local'`.execute(db)
  progress(`  tenant context: checked on every node; ${app}'s SET LOCAL commands reach the workers`)
  // Citus sends enter()'s SET LOCALs, the signature among them, to the nodes as query text, over
  // connections that log in as the app role: pg_stat_activity shows that text to every session of
  // the role, and an outside review replayed another tenant's context from it. The role's sessions
  // are not tracked (a superuser's setting: the role cannot turn it back on); operators lose their
  // query text in pg_stat_activity, and see it in the logs instead.
  if (await isSuperuser(db)) {
    await sql`alter role ${sql.id(app)} set track_activities = off`.execute(db)
    progress(`  ${app}'s sessions are not tracked in pg_stat_activity on any node (their query text would show other tenants' signatures)`)
  } else {
    progress(`  warning: ${app}'s sessions show their query text, other tenants' signatures among it, in pg_stat_activity on the workers: as a superuser, ALTER ROLE ${app} SET track_activities = off (docs/citus.md, "Open on Citus")`)
  }
}

const CHAIN_HEADS = 'skills_db.audit_chain_heads'

/**
 * Distributed in one transaction, right after site_settings. audit_logs' triggers run as its
 * owner and touch the chain's heads (the stamp) and users (the actor check): run on the
 * coordinator while audit_logs is not distributed, they reach a distributed table over the
 * owner's connections, which Citus refuses once the request wrote a colocated placement as the
 * app role ("cannot perform query on placements that were modified in this transaction by a
 * different user": every request that wrote a distributed table, then appended an audit event);
 * run on a worker once audit_logs is, they cannot reach a table still the coordinator's (the
 * actor check, with users not yet distributed: 2,052 failed audit appends in an outside review).
 * Together, no request sees them apart. (No online copy for these: writes held for the copy.)
 * api_keys too, and the keys between these never off: with api_keys' key to users off, a deleted
 * user's API keys went on resolving until the run's end, and for good once a new user took the
 * id; with audit_signatures' key off, the app role wrote a signature of no audit row, which the
 * append-only table kept, and every later run failed validating the key (an outside review).
 */
const TOGETHER = ['public.users', 'public.api_keys', CHAIN_HEADS, 'public.audit_logs', 'public.audit_signatures']

async function firstDistributed(db: Kysely<any>, tables: string[]): Promise<string | undefined> {
  for (const table of tables) if (await isDistributed(db, table)) return table
  return undefined
}

/** The bytes the coordinator's own copy of `table` takes (0 when its heap is empty: only its indexes' first pages). */
async function localSize(db: Kysely<any>, table: string): Promise<number> {
  const { rows } = await sql<{ heap: string; total: string }>`select pg_catalog.pg_relation_size(${table}::regclass) as heap,
    pg_catalog.pg_total_relation_size(${table}::regclass) as total`.execute(db)
  return Number(rows[0]!.heap) === 0 ? 0 : Number(rows[0]!.total)
}


/**
 * The tables to distribute, as the readiness check sees them (every table of public with a
 * tenant_id column; partitions go with their parent), each after every table its triggers touch.
 * A trigger runs where its table's rows are: once the table is distributed, on a worker, where a
 * table it reads that is still the coordinator's own is not there (audit_logs' actor check reads
 * users: distributed before it, alphabetically, it failed the app's audit appends, 2,052 errors
 * in an outside review's run). What a trigger touches is read from its function's body, which
 * names its tables schema-qualified (the functions set search_path = pg_catalog, pg_temp); the
 * readiness check refuses trigger functions it does not know. The clearing triggers, which write
 * to other tables, no order serves: they are off for the run (references-during-distribute.ts).
 * The foreign keys give no order: those between these tables are off too. (distribute moves
 * users, api_keys and the audit tables in one transaction: TOGETHER.) A cycle is broken; ties go
 * alphabetically.
 */
export async function distributionOrder(db: Kysely<any>): Promise<string[]> {
  let { rows } = await sql<{ table: string; bodies: string[] }>`
    select c.relname as table,
      array(select p.prosrc from pg_catalog.pg_trigger t join pg_catalog.pg_proc p on p.oid = t.tgfoid
        where t.tgrelid = c.oid and not t.tgisinternal order by t.tgname) as bodies
    from pg_catalog.pg_class c where c.oid in ${DISTRIBUTED}
    order by 1`.execute(db)
  // A shard on the coordinator (of a Citus local table, or one an online copy killed midway left
  // for Citus's deferred clean-up) is a table of public too, named <table>_<shard id>: Citus's,
  // not one to distribute.
  const { rows: citus } = await sql<{ v: string }>`select extversion as v from pg_catalog.pg_extension where extname = 'citus'`.execute(db)
  if (citus.length > 0) {
    const { rows: tables } = await sql<{ t: string }>`select c.relname as t from pg_catalog.pg_dist_partition p
      join pg_catalog.pg_class c on c.oid = p.logicalrelid where c.relnamespace = 'public'::regnamespace`.execute(db)
    rows = rows.filter((r) => !tables.some((x) => new RegExp(`^${x.t}_\\d+$`).test(r.table)))
  }
  const touched = new Map(rows.map((r) => [r.table, rows.map((o) => o.table)
    .filter((o) => o !== r.table && r.bodies.some((body) => new RegExp(`\\bpublic\\s*\\.\\s*"?${o.replace(/[$]/g, '\\$&')}"?(?![\\w$])`, 'i').test(body)))]))
  const ordered: string[] = []
  const seen = new Set<string>()
  const visit = (table: string) => {
    if (seen.has(table)) return
    seen.add(table)
    for (const other of touched.get(table) ?? []) visit(other)
    ordered.push(table)
  }
  for (const r of rows) visit(r.table)
  return ordered
}

/** Every foreign key from one of `tables` to another or to one of `alsoTo`, as `ALTER TABLE … ADD CONSTRAINT` takes it. */
async function foreignKeysBetween(db: Kysely<any>, tables: string[], alsoTo: string[] = []) {
  const { rows } = await sql<{ table: string; name: string; definition: string; parent: string }>`
    select c.relname as table, k.conname as name, pg_catalog.pg_get_constraintdef(k.oid) as definition, p.relname as parent
    from pg_catalog.pg_constraint k join pg_catalog.pg_class c on c.oid = k.conrelid join pg_catalog.pg_class p on p.oid = k.confrelid
    where k.contype = 'f' and c.relnamespace = 'public'::regnamespace and p.relnamespace = 'public'::regnamespace
      and not c.relispartition and c.relname = any(${tables}) and p.relname = any(${[...tables, ...alsoTo]})
    order by 1, 2`.execute(db)
  return rows
}

/**
 * Drops foreign key `key`, with its table and the table it references locked first, in the app's
 * order behind the tenant context keys (lockInOrder): the app's requests in flight finish, and the
 * next wait at their entry, holding nothing. Dropping a key locks both tables; taken as the ALTER
 * takes them (the table, then the one it references), a request that had written a user and then
 * read skills waited on this step while it waited on the request, until its lock timeout, every
 * try: under the new app's load, distribute ran out of its lock budget (with withTenant's
 * pipelined way on, in most runs).
 */
function dropForeignKey(conn: Kysely<any>, key: { table: string; name: string }): Promise<unknown> {
  return withLockRetry(conn, key.table, async (trx) => {
    const { rows } = await sql<{ parent: string }>`select c.confrelid::regclass::text as parent from pg_catalog.pg_constraint c
      where c.conrelid = pg_catalog.to_regclass(${key.table}::text) and c.conname = ${key.name}`.execute(trx)
    const parent = rows[0]?.parent
    if (parent) await lockInOrder(trx, parent === key.table ? [key.table] : [key.table, parent])
    await sql`alter table ${sql.table(key.table)} drop constraint if exists ${sql.id(key.name)}`.execute(trx)
  })
}
