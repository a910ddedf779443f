import { readdirSync, readFileSync } from 'node:fs'
import { GUARD_MIGRATION, MIGRATIONS_DIR } from '../../src/migrator/migration-provider.ts'

/** Every migration in the code, by name, oldest first (the guard of 0000 aside). */
export const ALL_MIGRATION_NAMES = readdirSync(MIGRATIONS_DIR).filter((f) => /^\d{4}_.*\.ts$/.test(f)).map((f) => f.slice(0, -3)).filter((n) => n !== GUARD_MIGRATION).sort()
const phaseOf = (name: string) => /^export const phase = '(open|contract)'$/m.exec(readFileSync(`${MIGRATIONS_DIR}${name}.ts`, 'utf8'))?.[1] ?? 'expand'
/** The migrations of the open phase (`phase = 'open'`): `skills-db open` applies them. */
export const OPEN_MIGRATION_NAMES = ALL_MIGRATION_NAMES.filter((n) => phaseOf(n) === 'open')
/** The migrations of the contract phase (`phase = 'contract'`): `skills-db contract` applies them. */
export const CONTRACT_MIGRATION_NAMES = ALL_MIGRATION_NAMES.filter((n) => phaseOf(n) === 'contract')
/** What `latest` applies on a fresh install: the expand phase's migrations, in name order. */
export const MIGRATION_NAMES = ALL_MIGRATION_NAMES.filter((n) => phaseOf(n) === 'expand')
/** What waits for the operator after `latest`, in the (name) order `contract` applies it on a database never opened. */
export const GATED_MIGRATION_NAMES = ALL_MIGRATION_NAMES.filter((n) => phaseOf(n) !== 'expand')
/** The order a fresh install applies everything in: latest, then open, then contract. */
export const FRESH_INSTALL_ORDER = [...MIGRATION_NAMES, ...OPEN_MIGRATION_NAMES, ...CONTRACT_MIGRATION_NAMES]
