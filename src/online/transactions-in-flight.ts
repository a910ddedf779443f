import { sql, type Kysely } from 'kysely'
import { setTimeout as sleep } from 'node:timers/promises'
import { sessionLabel } from './lock-holders.ts'
import { LockRetryExhausted } from './lock-retry.ts'

/**
 * Waits until every transaction open now on this node of a session that acts as `app` has ended
 * (by its own transaction lock, which every session holds), for up to `budgetMs`. Reads only
 * pg_locks and what pg_stat_activity shows every role, so the owner needs no pg_read_all_stats.
 */
export async function transactionsInFlightEnded(db: Kysely<any>, app: string, what: string, budgetMs: number): Promise<void> {
  const { rows } = await sql<{ vxids: string[] }>`select coalesce(array_agg(l.virtualxid), '{}') as vxids from pg_catalog.pg_locks l
    join pg_catalog.pg_stat_activity a on a.pid = l.pid
    join pg_catalog.pg_roles r on r.oid = a.usesysid
    -- The app role's sessions, and those of a role that can act as it (a member, or a pooler that
    -- logs in as another role and SETs ROLE: an outside review lost an update through one), but
    -- not a superuser's or this command's role's.
    where l.locktype = 'virtualxid' and l.granted and a.pid <> pg_catalog.pg_backend_pid()
      -- (This database's: the app role's transactions in another database never see this one's state.)
      and a.datname = pg_catalog.current_database()
      and (a.usename = ${app} or (pg_catalog.pg_has_role(a.usesysid, ${app}, 'MEMBER') and not r.rolsuper and a.usename <> current_user))`.execute(db)
  const deadline = Date.now() + budgetMs
  for (;;) {
    const { rows: open } = await sql<{ n: number; who: string | null }>`select count(*)::int as n,
      string_agg(${sessionLabel(sql`''`)}, '; ') as who from pg_catalog.pg_locks l join pg_catalog.pg_stat_activity a on a.pid = l.pid
      where l.locktype = 'virtualxid' and l.virtualxid = any(${rows[0]!.vxids})`.execute(db)
    if (open[0]!.n === 0) return
    if (Date.now() > deadline) throw new LockRetryExhausted(`gave up waiting for the app's transactions ${what} to end: ${open[0]!.who}; end them or run the command again (it goes on from there)`)
    await sleep(20)
  }
}
