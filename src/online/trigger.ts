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
  /**
   * The trigger function: schema-qualified name without arguments, and its CREATE OR REPLACE
   * statement. Without a definition, the function is another step's (one function shared by the
   * triggers of several tables): the trigger neither creates nor drops it.
   */
  fn: { name: string; definition?: RawBuilder<unknown> }
}

/** A trigger and its function, created together in one short transaction; `down` drops both. */
export function trigger(spec: TriggerSpec): Step {
  const fn = sql.raw(spec.fn.name)
  const definition = spec.fn.definition
  return {
    name: `trigger ${spec.name} on ${spec.table}`,
    up: (db) =>
      withLockRetry(db, spec.table, async (trx) => {
        if (definition) await databaseFunction({ signature: `${spec.fn.name}()`, definition }).up(trx)
        await sql`drop trigger if exists ${sql.id(spec.name)} on ${sql.table(spec.table)}`.execute(trx)
        await sql`create trigger ${sql.id(spec.name)} ${sql.raw(spec.events)} on ${sql.table(spec.table)}
          for each ${sql.raw(spec.level)} execute function ${fn}()`.execute(trx)
      }),
    down: (db) =>
      withLockRetry(db, spec.table, async (trx) => {
        await sql`drop trigger if exists ${sql.id(spec.name)} on ${sql.table(spec.table)}`.execute(trx)
        if (definition) await sql`drop function if exists ${fn}()`.execute(trx)
      }),
  }
}

/**
 * The trigger fires in every session_replication_role, replica included (`ENABLE ALWAYS`): a
 * superuser who sets replica mode to skip triggers does not skip this one. `down` restores the
 * default (fires in origin and local mode only).
 */
export function triggerFiresAlways(table: string, name: string): Step {
  const set = (mode: 'always' | 'origin') => async (db: Parameters<Step['up']>[0]) => {
    await withLockRetry(db, table, (trx) =>
      sql`alter table ${sql.table(table)} ${mode === 'always' ? sql`enable always trigger` : sql`enable trigger`} ${sql.id(name)}`.execute(trx))
  }
  return { name: `trigger ${name} on ${table} fires always`, up: set('always'), down: set('origin') }
}
