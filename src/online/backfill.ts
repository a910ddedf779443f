import { sql, type Kysely } from 'kysely'
import { ident } from './catalog.ts'
import { withLockRetry } from './lock-retry.ts'
import { progress, run } from './run-context.ts'

/**
 * Sets `column` to `value` where it is NULL, in batches of the run's `batchSize` rows, each its
 * own short transaction, walking the primary key (`id`) so the whole table is read once.
 * A cheap probe first: when no row is NULL (the usual case after a catalog default) nothing is written.
 *
 * @returns the number of rows updated
 */
export async function backfillNulls(db: Kysely<any>, table: string, column: string, value: string): Promise<number> {
  ident(table)
  ident(column)
  const probe = await sql`select 1 from ${sql.table(table)} where ${sql.id(column)} is null limit 1`.execute(db)
  if (probe.rows.length === 0) return 0
  const batch = run().batchSize
  let after = ''
  let updated = 0
  for (;;) {
    // Its own short transaction, retried if a row it must update is locked by the app for longer
    // than the lock timeout (the app's writes to those rows wait at most that long for us).
    const { rows } = await withLockRetry(db, table, (trx) => sql<{ last: string | null; n: number }>`
      with ids as (
        select id from ${sql.table(table)} where id > ${after} order by id limit ${batch}
      ), done as (
        update ${sql.table(table)} t set ${sql.id(column)} = ${value}
        from ids where t.id = ids.id and t.${sql.id(column)} is null
        returning 1
      )
      select (select max(id) from ids) as last, (select count(*)::int from done) as n`.execute(trx))
    const last = rows[0]?.last
    updated += rows[0]?.n ?? 0
    if (!last) break
    after = last
    progress(`  ${table}: backfilled ${updated} rows so far (up to id ${after})`)
  }
  return updated
}
