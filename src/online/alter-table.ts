import { sql, type Kysely, type RawBuilder } from 'kysely'
import { constraintInfo } from './catalog.ts'
import { withLockRetry } from './lock-retry.ts'

/**
 * `ALTER TABLE <table> <action>` for each action, in one short transaction retried on lock
 * timeouts (see withLockRetry). `appSafe` for actions whose lock never blocks the app (VALIDATE).
 */
export async function alterTable(
  db: Kysely<any>,
  table: string,
  actions: RawBuilder<unknown> | RawBuilder<unknown>[],
  options: { appSafe?: boolean } = {},
): Promise<void> {
  await withLockRetry(db, table, async (trx) => {
    for (const action of [actions].flat()) await sql`alter table ${sql.table(table)} ${action}`.execute(trx)
  }, options)
}

/** Drops a constraint when it is there; a rerun finds nothing to do. */
export async function dropConstraint(db: Kysely<any>, table: string, name: string): Promise<void> {
  if (await constraintInfo(db, table, name)) await alterTable(db, table, sql`drop constraint if exists ${sql.id(name)}`)
}
