import { sql, type Kysely } from 'kysely'

/**
 * Facts a migration records about this database for later runs and for its own `down` (which
 * role is the app role, which roles are the old app's, what a step changed and must restore).
 * They live in the migrator's schema, out of the app's sight.
 */
const TABLE = sql`skills_db.settings`

export async function readRecorded(db: Kysely<any>, key: string): Promise<string | undefined> {
  const { rows } = await sql<{ t: string | null }>`select pg_catalog.to_regclass('skills_db.settings')::text as t`.execute(db)
  if (!rows[0]?.t) return undefined
  const found = await sql<{ value: string }>`select value from ${TABLE} where key = ${key}`.execute(db)
  return found.rows[0]?.value
}

/** Records `value` under `key`; an existing value is kept unless `replace`. */
export async function record(db: Kysely<any>, key: string, value: string, { replace = false } = {}): Promise<void> {
  await sql`create table if not exists ${TABLE} (key text primary key, value text not null)`.execute(db)
  await sql`insert into ${TABLE} (key, value) values (${key}, ${value})
    on conflict (key) do ${replace ? sql`update set value = excluded.value` : sql`nothing`}`.execute(db)
}

export async function forget(db: Kysely<any>, key: string): Promise<void> {
  const { rows } = await sql<{ t: string | null }>`select pg_catalog.to_regclass('skills_db.settings')::text as t`.execute(db)
  if (rows[0]?.t) await sql`delete from ${TABLE} where key = ${key}`.execute(db)
}
