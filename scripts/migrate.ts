/**
 * skills-db migration CLI: parses, prints and exits. Every command is a library call
 * (src/migrator), so the CLI and migrateToLatest() at app boot are one code path.
 *
 *   tsx scripts/migrate.ts latest | up | down [--to <name>|all] [--force] | status | make <name>
 */
import { parseArgs } from 'node:util'
import { generateTypes } from '../src/codegen/generate-types.ts'
import { openDb } from '../src/connection/create-db.ts'
import { redactUrl } from '../src/connection/database-url.ts'
import { usingDatabase, type DatabaseSource } from '../src/connection/using-database.ts'
import { makeMigration } from '../src/migrator/make-migration.ts'
import { migrateDown, migrateToLatest, migrateUp, type MigrationOutcome } from '../src/migrator/migrate.ts'
import { migrationStatus } from '../src/migrator/migration-status.ts'
import { storedTenantKeyIds } from '../src/migrator/tenant-context-keys.ts'

const USAGE = 'usage: migrate <latest|up|down|status|make> [--to <name>|all] [--force] [--app-role <name>] [--old-app-role <name>]... [--no-codegen] [--lock-timeout-ms N] [--lock-retry-budget-ms N] [--batch-size N]'

async function main(argv: string[]): Promise<number> {
  const { positionals, values } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      to: { type: 'string' },
      force: { type: 'boolean', default: false },
      'app-role': { type: 'string' },
      'old-app-role': { type: 'string', multiple: true },
      'no-codegen': { type: 'boolean', default: false },
      'lock-timeout-ms': { type: 'string' },
      'lock-retry-budget-ms': { type: 'string' },
      'batch-size': { type: 'string' },
    },
  })
  const [command, ...rest] = positionals
  const log = { info: (m: string) => console.log(`  ${m}`) }

  if (command === 'make') {
    if (rest.length !== 1) throw new Error('migrate:make needs exactly one name, e.g. npm run migrate:make -- add_skill_tags')
    console.log(`created ${makeMigration(rest[0]!)}`)
    return 0
  }
  if (!['latest', 'up', 'down', 'status'].includes(command ?? '')) {
    throw new Error(command ? `unknown command "${command}"; ${USAGE}` : USAGE)
  }
  if (rest.length > 0) throw new Error(`unexpected argument "${rest[0]}"; ${USAGE}`)
  if (values.to !== undefined && command !== 'down') throw new Error('--to only applies to migrate:down')

  const options = {
    logger: log,
    allowDataLoss: values.force,
    ...(values['app-role'] ? { appRole: values['app-role'] } : {}),
    ...(values['old-app-role'] ? { oldAppRoles: values['old-app-role'] } : {}),
    ...positiveInt('lockTimeoutMs', values['lock-timeout-ms']),
    ...positiveInt('lockRetryBudgetMs', values['lock-retry-budget-ms']),
    ...positiveInt('batchSize', values['batch-size']),
    // Secrets come from the environment, never from a flag (flags show in ps and shell history).
    ...(process.env.SKILLS_DB_TENANT_KEYS ? { tenantKeys: process.env.SKILLS_DB_TENANT_KEYS.split(',') } : {}),
  }

  return usingDatabase(process.env, async (source) => {
    console.log(source.embedded ? `embedded PostgreSQL on port ${source.embedded.port} (data in ${source.embedded.dataDir})` : `database ${redactUrl(source.url)}`)
    const db = await openDb(source.url, { max: 1, applicationName: 'skills-db migrator' })
    try {
      if (command === 'status') {
        printStatus(await migrationStatus(db))
        const ids = await storedTenantKeyIds(db).catch(() => undefined)
        if (ids) console.log(`tenant keys held by the database: ${ids.join(', ') || 'none (withTenant refuses every tenant: run latest with SKILLS_DB_TENANT_KEYS)'}`)
        return 0
      }
      const outcome =
        command === 'latest' ? await migrateToLatest(db, options)
        : command === 'up' ? await migrateUp(db, options)
        : await migrateDown(db, { ...options, ...(values.to !== undefined ? { to: values.to } : {}) })
      const code = report(outcome)
      // Regenerated after every run, not only those that changed something: an earlier run cut off
      // (Ctrl-C) after migrating but before codegen must not leave stale types behind.
      if (outcome.status !== 'error' || outcome.steps.length > 0) {
        if (!values['no-codegen']) {
          await generateTypes(source.url)
          console.log('regenerated src/db-types.ts')
        }
      }
      if (code === 0 && source.embedded) printConnectHelp(source)
      return code
    } finally {
      await db.destroy()
    }
  })
}

function positiveInt(key: string, value: string | undefined): Record<string, number> {
  if (value === undefined) return {}
  const n = Number(value)
  if (!Number.isInteger(n) || n <= 0) throw new Error(`--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)} must be a positive whole number, not "${value}"`)
  return { [key]: n }
}

function report(outcome: MigrationOutcome): number {
  if (outcome.status === 'error') {
    console.error(`error: ${outcome.error.migration ? `${outcome.error.migration}: ` : ''}${outcome.error.message}`)
    for (const line of outcome.error.details ?? []) console.error(`  ${line}`)
    return 1
  }
  console.log(outcome.status === 'up-to-date' ? 'already up to date' : `done: ${outcome.steps.length} migration(s) ${outcome.steps[0]?.direction === 'Down' ? 'rolled back' : 'applied'}`)
  return 0
}

function printStatus(status: Awaited<ReturnType<typeof migrationStatus>>): void {
  for (const m of status.applied) console.log(`  applied  ${m.name}  ${m.appliedAt}`)
  for (const name of status.pending) console.log(`  pending  ${name}`)
  for (const m of status.unknown) console.log(`  unknown  ${m.name}  ${m.appliedAt}  (recorded in the database, not in this code)`)
  console.log(`${status.applied.length} applied, ${status.pending.length} pending, ${status.unknown.length} unknown`)
}

function printConnectHelp(source: DatabaseSource): void {
  console.log(`the embedded server is stopped again; to use it, run  npm run db:embedded  and connect to ${redactUrl(source.url)} (password: postgres)`)
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (error: Error) => {
    console.error(`error: ${error.message.split('\n')[0]}`)
    process.exit(1)
  },
)
