import { redactUrl } from '../../connection/database-url.ts'
import type { DatabaseSource } from '../../connection/using-database.ts'
import { migrateContract, migrateDown, migrateOpen, migrateToLatest, migrateUp, type MigrationOutcome } from '../../migrator/migrate.ts'
import { skillsDbMigrationProvider } from '../../migrator/migration-provider.ts'
import { PHASE_COMMAND } from '../../migrator/migration-phases.ts'
import type { MigrationError } from '../../migrator/migration-error.ts'
import type { Command, OptionValues } from '../command.ts'
import { migrateOptions, ROLES, TARGET, TUNING, TYPES } from '../options.ts'
import { usingTarget } from '../target.ts'
import { configuredTypesFile, refreshTypes } from '../types-file.ts'

type Direction = 'latest' | 'up' | 'down' | 'open' | 'contract'

const KEYS = 'SKILLS_DB_TENANT_KEYS (environment): the tenant keys the database then holds, <id>:<secret>[,<id>:<secret>]'

function migration(direction: Direction, values: OptionValues): Promise<number> {
  const file = values.codegen === false ? undefined : configuredTypesFile(values)
  const options = { ...migrateOptions(values, process.env), logger: { info: (m: string) => console.log(`  ${m}`) } }
  return usingTarget(values, async (db, source) => {
    const outcome =
      direction === 'latest' ? await migrateToLatest(db, options)
      : direction === 'up' ? await migrateUp(db, options)
      // open's and contract's --force are about the old app's sessions, not about data (a down's --force).
      : direction === 'open' ? await migrateOpen(db, { ...options, allowDataLoss: false, allowOldAppSessions: values.force === true })
      : direction === 'contract' ? await migrateContract(db, { ...options, allowDataLoss: false, allowOldAppSessions: values.force === true, timestampsAreUtc: values['timestamps-are-utc'] === true })
      : await migrateDown(db, { ...options, ...(typeof values.to === 'string' ? { to: values.to } : {}) })
    const code = await report(outcome)
    // Also after an up-to-date run: an earlier run cut off (Ctrl-C) after migrating but before
    // codegen must not leave stale types behind.
    if (file && (outcome.status !== 'error' || outcome.steps.length > 0)) await refreshTypes(db, source.url, file)
    if (code === 0 && source.embedded) printConnectHelp(source)
    return code
  })
}

/** What to do next, by the kind of error, in the CLI's terms: the library's messages name its options. */
function advice(error: MigrationError): string | undefined {
  switch (error.kind) {
    case 'data-loss': return 'run it again with --force to accept the loss'
    case 'old-app-sessions': return `if none of these sessions is the old app, skills-db ${error.migration && /open/.test(error.migration) ? 'open' : 'contract'} --force goes ahead`
    case 'timestamps-not-utc': return 'if they are UTC anyway, skills-db contract --timestamps-are-utc'
    case 'connection': return error.remedy ? 'the same command again resumes where it stopped' : undefined
    default: return undefined
  }
}

async function report(outcome: MigrationOutcome): Promise<number> {
  if (outcome.status === 'error') {
    // The CLI's own remedy in place of the library's, where it has one.
    const next = advice(outcome.error)
    console.error(`error: ${outcome.error.migration ? `${outcome.error.migration}: ` : ''}${next ? `${outcome.error.reason}; ${next}` : outcome.error.message}`)
    for (const line of outcome.error.details ?? []) console.error(`  ${line}`)
    return 1
  }
  console.log(outcome.status === 'up-to-date' ? 'already up to date' : `done: ${outcome.steps.length} migration(s) ${outcome.steps[0]?.direction === 'Down' ? 'rolled back' : 'applied'}`)
  if (outcome.waiting.length > 0) {
    const phases = await skillsDbMigrationProvider().phases()
    for (const phase of ['open', 'contract'] as const) {
      const names = outcome.waiting.filter((name) => phases.get(name) === phase)
      const { cli, when } = PHASE_COMMAND[phase]
      if (names.length > 0) console.log(`waiting for the operator: ${names.join(', ')} (the ${phase} phase: run ${cli} ${when})`)
    }
  }
  return 0
}

function printConnectHelp(source: DatabaseSource): void {
  // Attached to the server npm run db:embedded keeps: it is still running, and that one says how to connect.
  if (source.embedded?.attached) return
  console.log(`the embedded server is stopped again; to use it, run  npm run db:embedded  and connect to ${redactUrl(source.url)} (password: postgres)`)
}

export const latest: Command = {
  name: 'latest',
  summary: `Applies every pending migration (adopting a single-tenant database first), then regenerates the types file if one is configured. ${KEYS}.`,
  options: { ...TARGET, ...ROLES, ...TUNING, ...TYPES },
  run: (values) => migration('latest', values),
}

export const up: Command = {
  name: 'up',
  summary: `Applies the next pending migration. ${KEYS}.`,
  options: { ...TARGET, ...ROLES, ...TUNING, ...TYPES },
  run: (values) => migration('up', values),
}

export const down: Command = {
  name: 'down',
  summary: 'Rolls back the newest migration, or every one after --to. Refuses to drop data it cannot restore unless --force. Types are regenerated only at the latest migration, so a down never leaves types of an older schema.',
  options: {
    ...TARGET,
    to: { type: 'string', value: '<name>|all', help: 'roll back every migration after <name> (it stays applied), or all of them' },
    force: { type: 'boolean', help: 'let the rollback drop data it cannot restore (other tenants\' rows, the audit trail)' },
    ...ROLES,
    ...TUNING,
    ...TYPES,
  },
  run: (values) => migration('down', values),
}

export const open: Command = {
  name: 'open',
  summary: 'The open phase, before a second tenant is created: the single-tenant app\'s global keys and indexes, through which the app role could observe other tenants\' values, are replaced by ones it cannot use; the single-tenant app keeps its confined lane. Refuses while superuser or BYPASSRLS sessions (which may be the old app) are connected.',
  options: {
    ...TARGET,
    force: { type: 'boolean', help: 'go ahead although superuser or BYPASSRLS sessions are connected' },
    ...ROLES,
    ...TUNING,
    ...TYPES,
  },
  run: (values) => migration('open', values),
}

export const contract: Command = {
  name: 'contract',
  summary: 'The contract phase, once the single-tenant app is retired: every key tenant-inclusive, the old app\'s lane and global indexes gone, timestamps timestamptz; the migrations latest leaves waiting. Refuses while sessions of the old app\'s roles are connected.',
  options: {
    ...TARGET,
    force: { type: 'boolean', help: 'go ahead although sessions of the old app\'s roles (or superuser sessions) are connected' },
    'timestamps-are-utc': { type: 'boolean', help: 'the timestamp columns hold UTC although the server\'s TimeZone is another (they become timestamptz as UTC)' },
    ...ROLES,
    ...TUNING,
    ...TYPES,
  },
  run: (values) => migration('contract', values),
}
