import { sql, type RawBuilder } from 'kysely'
import { databaseFunction } from './database-function.ts'
import { withLockRetry } from './lock-retry.ts'
import type { Step } from './step.ts'

export interface TriggerSpec {
  table: string
  name: string
  /** e.g. `before insert` */
  events: string
  level: 'row' | 'statement'
  /** The trigger function: schema-qualified name without arguments, and its CREATE OR REPLACE statement. */
  fn: { name: string; definition: RawBuilder<unknown> }
}

/** A trigger and its function, created together in one short transaction; `down` drops both. */
export function trigger(spec: TriggerSpec): Step {
  const fn = sql.raw(spec.fn.name)
  return {
    name: `trigger ${spec.name} on ${spec.table}`,
    up: (db) =>
      withLockRetry(db, spec.table, async (trx) => {
        await databaseFunction({ signature: `${spec.fn.name}()`, definition: spec.fn.definition }).up(trx)
        await sql`drop trigger if exists ${sql.id(spec.name)} on ${sql.table(spec.table)}`.execute(trx)
        await sql`create trigger ${sql.id(spec.name)} ${sql.raw(spec.events)} on ${sql.table(spec.table)}
          for each ${sql.raw(spec.level)} execute function ${fn}()`.execute(trx)
      }),
    down: (db) =>
      withLockRetry(db, spec.table, async (trx) => {
        await sql`drop trigger if exists ${sql.id(spec.name)} on ${sql.table(spec.table)}`.execute(trx)
        await sql`drop function if exists ${fn}()`.execute(trx)
      }),
  }
}
