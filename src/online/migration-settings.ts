import { sql, type Kysely } from 'kysely'

/**
 * Knobs the migrator hands to migrations through session settings on its connection, so that
 * migrations stay plain functions of `db` (options → migrate.ts → these settings → building blocks).
 */
export const SETTINGS = {
  lockTimeoutMs: 'skills_db.lock_timeout_ms',
  lockRetryBudgetMs: 'skills_db.lock_retry_budget_ms',
  batchSize: 'skills_db.batch_size',
} as const

export const DEFAULTS = {
  /** How long one DDL statement may queue for its lock — and so hold up the app's statements behind it. */
  lockTimeoutMs: 50,
  /** How long a step keeps retrying a lock before giving up with the name of the blocker. */
  lockRetryBudgetMs: 120_000,
  batchSize: 5_000,
} as const

export async function readSetting(db: Kysely<any>, key: keyof typeof SETTINGS): Promise<number> {
  const { rows } = await sql<{ v: string | null }>`select current_setting(${SETTINGS[key]}, true) as v`.execute(db)
  const value = Number(rows[0]?.v)
  return rows[0]?.v && Number.isFinite(value) && value > 0 ? value : DEFAULTS[key]
}
