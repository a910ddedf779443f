import { sql, type Kysely } from 'kysely'
import { setTimeout as sleep } from 'node:timers/promises'
import { remoteLockWait } from '../online/remote-lock-wait.ts'
import { inRun, run, type RunContext } from '../online/run-context.ts'
import { DistributeRefused } from './steps.ts'

/**
 * Runs `fn`, whose statements run on `conn`, while a second connection of `db` watches the
 * workers for a lock `conn`'s statements wait on there (Citus's citus_lock_waits, by the global
 * pid its connections to the workers carry), and cancels the statement once such a wait has lasted
 * the run's lock timeout, leaving the blocker in the run context (remoteLockWait turns the
 * cancellation into a RemoteLockWait, which withLockRetry retries like a lock timeout here).
 *
 * Why: lock_timeout is this node's. A statement that Citus runs on a worker (a shard split's copy,
 * a shard's drop) waits there for as long as another session holds the shard, and this node sees no
 * lock wait, only a statement still running. An outside review held a shard on a worker through
 * run_command_on_workers (EXECUTE is PUBLIC's) as the app role: isolate-tenant, which holds the
 * app's tables on this node meanwhile, stalled every tenant's requests for as long as it liked,
 * past the run's budget; undistribute did the same behind a plain SELECT on a shard.
 */
export async function watchingRemoteWaits<T>(db: Kysely<any>, conn: Kysely<any>, fn: () => Promise<T>): Promise<T> {
  const { rows } = await sql<{ gpid: string; pid: number }>`select pg_catalog.citus_backend_gpid()::text as gpid, pg_catalog.pg_backend_pid() as pid`.execute(conn)
  const { gpid, pid } = rows[0]!
  if (!/^\d+$/.test(gpid)) throw new Error(`unexpected global pid ${JSON.stringify(gpid)}`)
  const { lockTimeoutMs } = run()
  const found: NonNullable<RunContext['remoteWaits']> = {}
  let done = false
  let ready!: () => void
  const watching = new Promise<void>((r) => (ready = r))
  const watcher = db.connection().execute(async (w) => {
    ready()
    const since = new Map<string, number>()
    while (!done) {
      const { rows: waits } = await sql<{ blocking: string; who: string }>`
        select w.blocking_gpid::text as blocking, case when w.blocking_gpid = ${gpid}::bigint
          then 'this command itself (a connection of Citus''s waits on a lock the command holds: pid ' || ${pid}::int || ')'
          else 'pid ' || pg_catalog.citus_pid_for_gpid(w.blocking_gpid) || ' on '
          || coalesce(n.nodename || ':' || n.nodeport, 'the coordinator') || ' ('
          || coalesce(nullif(a.application_name, ''), a.usename::text, 'another role') || coalesce(', ' || nullif(a.state, 'disabled'), '')
          || coalesce(', ' || left(nullif(nullif(w.current_statement_in_blocking_process, '<insufficient privilege>'), ''), 60), '') || ')' end as who
        -- The blocker by its global pid: the session that started it (on the coordinator, for the app's
        -- statements), which is the one to end; its node is where that session runs.
        from pg_catalog.citus_lock_waits w
          left join pg_catalog.pg_dist_node n on n.nodeid = w.blocking_nodeid
          left join pg_catalog.citus_dist_stat_activity a on a.global_pid = w.blocking_gpid
        -- A wait on its own global pid too: Citus's connections outside the command's transaction
        -- (a split's copy) can wait on a lock the command holds, which no deadlock detector sees.
        -- Not behind Citus's own background workers (its maintenance daemon drops the shards a split
        -- or a move left, a moment each): the command's statement waits that moment out.
        -- (By its backend type, which no client can choose: an outside review named its own session
        -- 'Citus Maintenance Daemon', which the application name let by.)
        where w.waiting_gpid = ${gpid}::bigint and coalesce(a.backend_type, 'client backend') = 'client backend'
        -- A prepared transaction holds locks with no backend, so citus_lock_waits has no edge for it
        -- (an outside review prepared one on a worker holding a shard, as the app role): asked on
        -- each node, for the connections of this command (their application name ends in its gpid).
        union all
        select 'prepared ' || r.nodeid, 'a prepared transaction on ' || coalesce(n.nodename || ':' || n.nodeport, 'node ' || r.nodeid)
          || ' (' || r.result || '; a superuser ends it with ROLLBACK PREPARED there)'
        from pg_catalog.run_command_on_all_nodes(${`select string_agg(distinct x.gid, ', ') from pg_stat_activity a
            cross join lateral unnest(pg_blocking_pids(a.pid)) b(pid) cross join pg_prepared_xacts x
            where b.pid = 0 and a.wait_event_type = 'Lock' and a.application_name ~ 'gpid=${gpid}$'`}) r
          left join pg_catalog.pg_dist_node n on n.nodeid = r.nodeid
        where r.success and r.result <> ''`.execute(w)
      const now = Date.now()
      for (const key of [...since.keys()]) if (!waits.some((x) => x.blocking === key)) since.delete(key)
      for (const x of waits) if (!since.has(x.blocking)) since.set(x.blocking, now)
      if (!done && waits.some((x) => now - since.get(x.blocking)! >= (found.thresholdMs ?? lockTimeoutMs))) {
        found.blocker = [...new Set(waits.map((x) => x.who))].join('; ')
        await sql`select pg_catalog.pg_cancel_backend(${pid}::int)`.execute(w)
        since.clear()
      }
      // Wakes the command's session from a wait on its latch (online-distribution.ts).
      if (found.wake) await sql`select pg_catalog.pg_notify(${found.wake}, '')`.execute(w)
      // Each poll asks every node: not more often than every 100 ms, for the whole command.
      await sleep(Math.max(100, Math.min(lockTimeoutMs / 2, 250)))
    }
  })
  // Handled at once: a watcher whose connection dies (a server restart) must not end the process
  // with an unhandled rejection; the command's own statement then fails with a one-line error.
  watcher.catch(() => {})
  // A pool of one connection would make the watcher wait for `conn` until the command ends.
  // (The timer is cleared once the watcher is there, so that it holds no process open for 5 s.)
  const timer = new AbortController()
  const watched = await Promise.race([watching.then(() => true), sleep(5_000, undefined, { signal: timer.signal }).then(() => false, () => false)])
  timer.abort()
  if (!watched) {
    done = true
    throw new DistributeRefused('this command needs a second connection of its pool, to watch its waits on the workers (createDb with max 2 or more): nothing was changed')
  }
  try {
    return await inRun({ remoteWaits: found }, fn)
  } catch (error) {
    throw inRun({ remoteWaits: found }, () => remoteLockWait(error)) ?? error
  } finally {
    done = true
    await watcher.catch(() => {})
  }
}

/**
 * Runs `fn` with the watcher of watchingRemoteWaits cancelling only waits of at least `ms`: for a
 * statement that holds none of the app's requests while it waits, and whose waits behind the
 * app's own transactions are part of its work (isolate-tenant's split left to Citus: cancelled at
 * the lock timeout, it never finished under the test's load).
 */
export async function watchedAfter<T>(ms: number, fn: () => Promise<T>): Promise<T> {
  const found = run().remoteWaits
  if (!found) return fn()
  const before = found.thresholdMs
  found.thresholdMs = ms
  try {
    return await fn()
  } finally {
    found.thresholdMs = before
  }
}
