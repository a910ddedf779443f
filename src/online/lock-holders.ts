import { sql, type Kysely, type RawBuilder } from 'kysely'

/**
 * A session of pg_stat_activity `a`, as an error names it: its pid and who it is, which any role
 * sees, then what only a role with pg_read_all_stats (or the session's own) sees, its state and query.
 */
export const sessionLabel = (holds: ReturnType<typeof sql>) => sql`'pid ' || a.pid || ' (' || coalesce(nullif(a.application_name, ''), a.usename::text, 'another role')
  || coalesce(', ' || a.state, '') || ${holds} || coalesce(', ' || left(nullif(a.query, '<insufficient privilege>'), 60), '') || ')'`

/** Table locks that stop more than DDL: what a lock wait of a read or a row write is behind. */
export const STRONG_LOCKS = ['ShareUpdateExclusiveLock', 'ShareLock', 'ShareRowExclusiveLock', 'ExclusiveLock', 'AccessExclusiveLock'] as const

/**
 * The other sessions of this database holding a granted lock on one of `relations` (an SQL set of
 * regclass), of one of `modes` when given, each with the tables it holds: the sessions to end,
 * `'; '`-separated; undefined when there are none (any more). Only this database's locks: a database
 * cloned from another has the same relation oids, and a session there holding its own table is not
 * in the way. Reads pg_locks only, so it never waits itself.
 */
export async function lockHolders(db: Kysely<any>, relations: RawBuilder<unknown>, modes?: readonly string[]): Promise<string | undefined> {
  const { rows } = await sql<{ who: string | null }>`
    select string_agg(h.who, '; ' order by h.who) as who from (
      select ${sessionLabel(sql`', holds ' || string_agg(distinct l.relation::regclass::text, ', ')`)} as who
      from pg_catalog.pg_locks l join pg_catalog.pg_stat_activity a on a.pid = l.pid
      where l.database = (select d.oid from pg_catalog.pg_database d where d.datname = pg_catalog.current_database())
        and l.relation in (${relations}) and l.granted and l.pid <> pg_catalog.pg_backend_pid()
        ${modes ? sql`and l.mode = any(${[...modes]}::text[])` : sql``}
      group by a.pid, a.application_name, a.usename, a.state, a.query) h`.execute(db)
  return rows[0]?.who ?? undefined
}

/** Every table of public and skills_db, as a relation set for {@link lockHolders}. */
export const PROJECT_TABLES = sql`select c.oid from pg_catalog.pg_class c where c.relnamespace in ('public'::regnamespace, 'skills_db'::regnamespace)`

/** What an error names when the sessions that held a lock have ended since. */
export const HOLDER_GONE = 'a session that has since finished'
