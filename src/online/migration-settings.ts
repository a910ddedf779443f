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

type Settings = { [K in keyof typeof SETTINGS]: number } & { sessionLockTimeoutMs: number }

// Read once per connection: a migration asks for these before every DDL statement.
const cache = new WeakMap<object, Settings>()

export async function readSettings(db: Kysely<any>): Promise<Settings> {
  let settings = cache.get(db)
  if (!settings) {
    const { rows } = await sql<Record<keyof typeof SETTINGS, string | null>>`
      select pg_catalog.current_setting(${SETTINGS.lockTimeoutMs}::text, true) as "lockTimeoutMs",
        pg_catalog.current_setting(${SETTINGS.lockRetryBudgetMs}::text, true) as "lockRetryBudgetMs",
        pg_catalog.current_setting(${SETTINGS.batchSize}::text, true) as "batchSize",
        (select setting from pg_settings where name = 'lock_timeout') as "sessionLockTimeoutMs"`.execute(db)
    const parse = (k: keyof typeof SETTINGS) => {
      const value = Number(rows[0]?.[k])
      return rows[0]?.[k] && Number.isFinite(value) && value > 0 ? value : DEFAULTS[k]
    }
    settings = {
      lockTimeoutMs: parse('lockTimeoutMs'),
      lockRetryBudgetMs: parse('lockRetryBudgetMs'),
      batchSize: parse('batchSize'),
      sessionLockTimeoutMs: Number((rows[0] as Record<string, string | null> | undefined)?.sessionLockTimeoutMs ?? 0),
    }
    cache.set(db, settings)
  }
  return settings
}
