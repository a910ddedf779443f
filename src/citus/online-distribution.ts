import { sql, type Kysely } from 'kysely'
import { setTimeout as sleep } from 'node:timers/promises'
import { withLockRetry } from '../online/lock-retry.ts'
import { transactionsInFlightEnded } from '../online/transactions-in-flight.ts'
import { forget, readRecorded, record } from '../online/recorded-settings.ts'
import { progress, run } from '../online/run-context.ts'
import { step } from './steps.ts'
import { COORDINATOR_WITNESS, ONLINE_MARKER } from './worker-tenant-context.ts'

/**
 * Distributing a table with the app's writes going on: create_distributed_table_concurrently,
 * which makes the table a Citus local table (its one shard on the coordinator), copies that shard
 * into the new ones by logical replication, and holds writes only for its last catch-up.
 */

/** The table whose row security distributeOnline has un-FORCEd, while it has (a kill leaves it so). */
const UNFORCED = 'citus_rls_unforced'
/** The channel distributeOnline's session listens to, to be woken (see there). */
const CATCH_UP = 'skills_db_online_catch_up'
/** The audit chain's heads: written by audit_logs' stamp, which a replicated write would stamp again. */
const CHAIN_HEADS = 'skills_db.audit_chain_heads'

/**
 * Whether this cluster can distribute tables online, or why not: it needs the coordinator in the
 * metadata (the Citus local table's shard lives there), wal_level = logical on it, and one
 * placement per shard.
 */
export async function onlineDistribution(db: Kysely<any>): Promise<true | string> {
  const { rows } = await sql<{ coordinator: boolean; wal: string; factor: string }>`select
    exists (select 1 from pg_dist_node where groupid = 0) as coordinator,
    current_setting('wal_level') as wal, current_setting('citus.shard_replication_factor') as factor`.execute(db)
  const held = 'with the app\'s writes held'
  if (!rows[0]!.coordinator) return `${held}: the coordinator is not in the metadata (citus_set_coordinator_host) for an online copy`
  if (rows[0]!.wal !== 'logical') return `${held}: an online copy needs wal_level = logical`
  if (rows[0]!.factor !== '1') return `${held}: an online copy needs citus.shard_replication_factor = 1`
  return true
}

/**
 * How `table` is copied where an online copy is possible, and why, as its line says. With the
 * app's writes held: a small table (Citus's replication takes seconds to set up, a blocking copy
 * of it a few ms); one whose triggers fire in replication (the last catch-up replays the app's
 * writes into the new shards after their triggers exist, and a replication worker fires those
 * enabled ALWAYS: the audit stamp would stamp a row already stamped); the chain's heads, with
 * audit_logs (a run that copied them online left every later audit append of both tenants failing
 * on a duplicate seq). Online: a large table, or one an interrupted online copy left a Citus local
 * table (its rows are in its shard, and its shell measures nothing).
 */
export async function copyPlan(db: Kysely<any>, table: string, onlineFromBytes: number): Promise<{ online: boolean; why: string }> {
  const held = (why: string) => ({ online: false, why: `with the app's writes held: ${why}` })
  if (table === CHAIN_HEADS) return held('the audit stamp writes it, with audit_logs')
  const { rows } = await sql<{ always: string | null; identity: boolean; bytes: string; local: boolean }>`select pg_catalog.pg_total_relation_size(${table}::regclass) as bytes,
    (select string_agg(t.tgname, ', ' order by t.tgname) from pg_catalog.pg_trigger t where t.tgrelid = ${table}::regclass
      and not t.tgisinternal and t.tgenabled in ('A', 'R') and (t.tgtype & 1) = 1) as always,
    exists (select 1 from pg_catalog.pg_index i where i.indrelid = ${table}::regclass and (i.indisprimary or i.indisreplident)) as identity,
    exists (select 1 from pg_dist_partition where logicalrelid = ${table}::regclass and partmethod = 'n' and repmodel = 's' and colocationid = 0) as local`.execute(db)
  const { always, identity, local } = rows[0]!
  const bytes = Number(rows[0]!.bytes)
  if (always) return held(`its triggers ${always} fire in replication too`)
  if (!identity) return held('no primary key to replicate its updates by')
  if (local) return { online: true, why: 'online: an interrupted online copy left it a Citus local table' }
  if (bytes < onlineFromBytes) return held(`${sizeOf(bytes)}, under the ${sizeOf(onlineFromBytes)} an online copy starts at`)
  return { online: true, why: `online: ${sizeOf(bytes)}, ${sizeOf(onlineFromBytes)} or more` }
}

/** Bytes as a person reads them: 32 kB, 8.0 MB, 1 MB. */
export function sizeOf(n: number): string {
  if (n >= 1 << 20) {
    const mb = n / (1 << 20)
    return `${Number.isInteger(mb) ? mb : mb.toFixed(1)} MB`
  }
  return n >= 1024 ? `${Math.round(n / 1024)} kB` : `${n} bytes`
}

/**
 * create_distributed_table_concurrently on `table`, with its row security not FORCEd meanwhile:
 * Citus's subscription on each worker applies the replicated writes as a member of the owner's
 * role, and PostgreSQL 15 refuses to replicate into a table whose row security applies to it (the
 * apply worker retried for good, and distribute hung). FORCE is recorded and put back right after
 * (after an error too), and by the next run after a kill (rowSecurityForcedAgain). Meanwhile only the owner, whose
 * sessions are the migrator's and the functions it defined (each filters by tenant itself), sees
 * past the policies; the app's role does not.
 *
 * Outside a transaction (Citus refuses one), retried by withLockRetry when a lock is not granted
 * within the run's lock timeout: the table stays a Citus local table, and the next try goes on.
 */
export async function distributeOnline(db: Kysely<any>, table: string, colocateWith: string, app: string): Promise<void> {
  const { rows } = await sql<{ forced: boolean }>`select relforcerowsecurity as forced from pg_catalog.pg_class where oid = ${table}::regclass`.execute(db)
  if (rows[0]!.forced) {
    await record(db, UNFORCED, table, { replace: true })
    await withLockRetry(db, table, (trx) => sql`alter table ${sql.table(table)} no force row level security`.execute(trx))
  }
  // The table a Citus local table first (as Citus would make it), then the app's transactions that
  // entered before waited for: each one after takes its shard's metadata lock at enter()
  // (worker-tenant-context.ts), so that none has a write planned against the Citus local table
  // when the copy switches it to its shards (such a write was lost: Citus rerouted it to no shard).
  const { rows: inMetadata } = await sql`select 1 from pg_dist_partition where logicalrelid = ${table}::regclass`.execute(db)
  if (inMetadata.length === 0) await withLockRetry(db, table, (trx) => sql`select citus_add_local_table_to_metadata(${table}::regclass)`.execute(trx))
  await transactionsInFlightEnded(db, app, `entered before ${table} became a Citus local table`, run().lockRetryBudgetMs)
  const settings = run()
  // Citus waits for its subscriptions to catch up in a loop that checks, then sleeps 1 s on this
  // session's latch; its last wait holds the app's writes, so every request that came meanwhile
  // waited 1.0-1.2 s. A notification on a channel this session listens to sets the latch: the
  // watcher (remote-waits.ts) sends one at each poll, and the loop checks again at once.
  await sql`listen ${sql.id(CATCH_UP)}`.execute(db)
  if (settings.remoteWaits) settings.remoteWaits.wake = CATCH_UP
  try {
    await withLockRetry(db, table, async (conn) => {
      await previousCopyStreamsEnded(conn)
      await sql`select create_distributed_table_concurrently(${table}::regclass, 'tenant_id', colocate_with => ${colocateWith}::text)`.execute(conn)
    }, { outsideTransaction: true })
  } catch (error) {
    // Citus leaves the table a Citus local table, which a rerun distributes: FORCE goes back now.
    await rowSecurityForcedAgain(db).catch(() => {})
    throw error
  } finally {
    if (settings.remoteWaits) settings.remoteWaits.wake = undefined
    await sql`unlisten ${sql.id(CATCH_UP)}`.execute(db).catch(() => {})
  }
  await rowSecurityForcedAgain(db)
}

/**
 * Waits (up to 10 s) until no walsender streams a replication slot of a Citus shard split here: a
 * try cancelled at its switch (the watcher does so when an app transaction holds the table that
 * long) leaves its walsender streaming for a moment, and the next try's clean-up of the slot then
 * crashed that walsender, which restarted every backend (outside review: 2 of 27 retries).
 */
async function previousCopyStreamsEnded(db: Kysely<any>): Promise<void> {
  for (let i = 0; i < 500; i++) {
    const { rows } = await sql`select 1 from pg_catalog.pg_replication_slots where active and slot_name like 'citus\_shard\_split\_slot\_%'`.execute(db)
    if (rows.length === 0) return
    await sleep(20)
  }
}

/** FORCEs row security again on the table distributeOnline un-FORCEd, if any (a run killed meanwhile). */
export async function rowSecurityForcedAgain(db: Kysely<any>): Promise<void> {
  const table = await readRecorded(db, UNFORCED)
  if (!table) return
  await withLockRetry(db, table, (trx) => sql`alter table ${sql.table(table)} force row level security`.execute(trx))
  await forget(db, UNFORCED)
}

/**
 * Before the first table goes online: enter() leaves a witness on the coordinator from now on (the
 * Citus local tables' shards are there), read from a Citus local table of its own. Requests that
 * entered before could meet a Citus local table with no witness there (a run saw 4 of 24,000 refused
 * by row security): they are waited for. Idempotent.
 */
export async function onlineWitnessOn(db: Kysely<any>, app: string): Promise<void> {
  if (await readRecorded(db, ONLINE_MARKER)) return
  await sql`create table if not exists ${sql.raw(COORDINATOR_WITNESS)} (one int)`.execute(db)
  await sql`revoke all on ${sql.raw(COORDINATOR_WITNESS)} from public`.execute(db)
  const { rows } = await sql<{ n: number }>`select count(*)::int as n from pg_dist_partition where logicalrelid = ${COORDINATOR_WITNESS}::regclass`.execute(db)
  if (rows[0]!.n === 0) await sql`select citus_add_local_table_to_metadata(${COORDINATOR_WITNESS}::regclass)`.execute(db)
  await record(db, ONLINE_MARKER, 'on', { replace: true })
  await transactionsInFlightEnded(db, app, 'entered before the coordinator\'s witness', run().lockRetryBudgetMs)
}

/** After the last table went online (or at undistribute, after a kill): no witness on the coordinator any more. */
export async function onlineWitnessOff(db: Kysely<any>, app: string): Promise<void> {
  if (await readRecorded(db, ONLINE_MARKER)) {
    await forget(db, ONLINE_MARKER)
    // A request that saw the marker reads the table: it ends before the table goes.
    await transactionsInFlightEnded(db, app, 'entered with the coordinator\'s witness', run().lockRetryBudgetMs)
  }
  await withLockRetry(db, COORDINATOR_WITNESS, (trx) => sql`drop table if exists ${sql.raw(COORDINATOR_WITNESS)}`.execute(trx))
}

/**
 * An online copy leaves its old shard to drop later, and one killed or failed its new shards,
 * replication slots (which keep WAL on the coordinator for good), publications and subscriptions:
 * recorded for Citus to drop later (pg_dist_cleanup), dropped now. distribute runs it at its end,
 * undistribute first (a killed copy's shards were left as tables of public beside its own).
 * Returns the bytes the shards it dropped on this node took.
 */
export async function citusLeftoversDropped(conn: Kysely<any>): Promise<number> {
  // By kind (Citus's CleanupObject), and the bytes of the shards on this node.
  const { rows } = await sql<{ what: string; bytes: string }>`select coalesce(string_agg(n || ' ' || case t
        when 1 then 'shard' when 2 then 'subscription' when 3 then 'replication slot' when 4 then 'publication' when 5 then 'role' else 'object' end
        || case when n > 1 then 's' else '' end, ', ' order by t), '') as what,
      (select coalesce(sum(pg_catalog.pg_total_relation_size(pg_catalog.to_regclass(c.object_name))), 0) from pg_dist_cleanup c
        where c.object_type = 1 and c.node_group_id = (select groupid from pg_dist_local_group))::text as bytes
    from (select object_type as t, count(*) as n from pg_dist_cleanup group by 1) k`.execute(conn)
  if (!rows[0]!.what) return 0
  await step(`Citus's deferred clean-up: ${rows[0]!.what} dropped (the old shards of online copies and of isolate-tenant's splits, and what an interrupted copy leaves)`, async () => {
    // What is still in use is left for a later try (Citus warns and keeps the record): the
    // subscription of a copy killed a moment ago, whose apply worker has not yet stopped (the
    // kill test saw one left on a worker, once in three runs). Tried again for up to 30 s.
    for (let i = 0; ; i++) {
      await sql`call citus_cleanup_orphaned_resources()`.execute(conn)
      const { rows: left } = await sql<{ n: number }>`select count(*)::int as n from pg_dist_cleanup`.execute(conn)
      if (left[0]!.n === 0) break
      if (i >= 60) {
        progress(`  warning: ${left[0]!.n} of Citus's clean-up records are still in use after 30 s: Citus's maintenance daemon drops them later (pg_dist_cleanup lists them)`)
        break
      }
      await sleep(500)
    }
  })
  return Number(rows[0]!.bytes)
}
