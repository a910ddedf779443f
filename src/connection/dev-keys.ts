import { randomBytes } from 'node:crypto'
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, writeSync } from 'node:fs'
import path from 'node:path'

/**
 * The keys of the embedded development server: a tenant key (the database stores a copy, the app
 * signs with it) and an audit key (the app signs audit rows with it; the database never sees it).
 * Only for the embedded server of a checkout: a database given by URL gets the keys its operator
 * sets, never these.
 */
export interface DevKeys {
  tenantKey: string
  auditKey: string
}

/** Where they are kept: beside the embedded server's data, in the git-ignored `.data/`. */
export const devKeysFile = (cwd = process.cwd()) => path.join(cwd, '.data', 'dev-keys.env')

// The file is also a shell script (`. .data/dev-keys.env`), so a terminal can hand the keys to an
// app or to the CLI; the values are base64 and need no quoting.
const LINE = /^export (SKILLS_DB_TENANT_KEY|SKILLS_DB_AUDIT_KEY)=(\S+)$/

/**
 * The development keys of `file`, generated and written (mode 0600) on first use, read back ever
 * after: one database keeps one tenant key, and the audit trail stays verifiable with one audit key.
 *
 * @example
 * const { keys, created } = loadOrCreateDevKeys(devKeysFile())
 */
export function loadOrCreateDevKeys(file: string): { keys: DevKeys; created: boolean } {
  if (existsSync(file)) return { keys: readDevKeys(file), created: false }
  const keys = { tenantKey: `dev:${secret()}`, auditKey: `dev-audit:${secret()}` }
  mkdirSync(path.dirname(file), { recursive: true })
  const text = [
    '# The embedded development server\'s keys (skills-db generated them; never use them elsewhere).',
    `export SKILLS_DB_TENANT_KEY=${keys.tenantKey}`,
    `export SKILLS_DB_AUDIT_KEY=${keys.auditKey}`,
    'export SKILLS_DB_TENANT_KEYS=$SKILLS_DB_TENANT_KEY SKILLS_DB_AUDIT_KEYS=$SKILLS_DB_AUDIT_KEY',
    '',
  ].join('\n')
  // 'wx': two processes starting at once must not each write a key of their own; the loser reads the winner's.
  let fd: number
  try {
    fd = openSync(file, 'wx', 0o600)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'EEXIST') return { keys: readDevKeys(file), created: false }
    throw error
  }
  try {
    writeSync(fd, text)
  } finally {
    closeSync(fd)
  }
  return { keys, created: true }
}

/** Reads a file {@link loadOrCreateDevKeys} wrote; says what to do when it is not one. */
export function readDevKeys(file: string): DevKeys {
  const found = new Map<string, string>()
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    const match = LINE.exec(line.trim())
    if (match) found.set(match[1]!, match[2]!)
  }
  const tenantKey = found.get('SKILLS_DB_TENANT_KEY')
  const auditKey = found.get('SKILLS_DB_AUDIT_KEY')
  if (!tenantKey || !auditKey) {
    throw new Error(`${file} does not hold the development keys (export SKILLS_DB_TENANT_KEY=… and export SKILLS_DB_AUDIT_KEY=… lines): delete it, and the next command on the embedded server writes new ones`)
  }
  return { tenantKey, auditKey }
}

/**
 * Fills in the key variables `env` lacks from the development keys (generating them on first use),
 * for a command on the embedded server. A pair the environment already sets (the migrator's
 * `…_KEYS` or the app's `…_KEY`) is left as it is. Returns whether the file was written now.
 */
export function applyDevKeys(env: NodeJS.ProcessEnv, file: string): { created: boolean; applied: boolean } {
  const tenantSet = Boolean(env.SKILLS_DB_TENANT_KEYS || env.SKILLS_DB_TENANT_KEY)
  const auditSet = Boolean(env.SKILLS_DB_AUDIT_KEYS || env.SKILLS_DB_AUDIT_KEY)
  if (tenantSet && auditSet) return { created: false, applied: false }
  const { keys, created } = loadOrCreateDevKeys(file)
  if (!tenantSet) Object.assign(env, { SKILLS_DB_TENANT_KEYS: keys.tenantKey, SKILLS_DB_TENANT_KEY: keys.tenantKey })
  if (!auditSet) Object.assign(env, { SKILLS_DB_AUDIT_KEYS: keys.auditKey, SKILLS_DB_AUDIT_KEY: keys.auditKey })
  return { created, applied: true }
}

const secret = () => randomBytes(32).toString('base64url')
