import { readdirSync, readFileSync } from 'node:fs'
import { GUARD_MIGRATION, MIGRATIONS_DIR } from '../../src/migrator/migration-provider.ts'

/** Every migration in the code, by name, oldest first (the guard of 0000 aside). */
export const ALL_MIGRATION_NAMES = readdirSync(MIGRATIONS_DIR).filter((f) => /^\d{4}_.*\.ts$/.test(f)).map((f) => f.slice(0, -3)).filter((n) => n !== GUARD_MIGRATION).sort()
/** The migrations of the contract phase: those that export `phase = 'contract'`. */
export const CONTRACT_MIGRATION_NAMES = ALL_MIGRATION_NAMES.filter((n) => /^export const phase = 'contract'$/m.test(readFileSync(`${MIGRATIONS_DIR}${n}.ts`, 'utf8')))
/** What `latest` applies: every migration before the first of the contract phase. */
export const MIGRATION_NAMES = CONTRACT_MIGRATION_NAMES.length ? ALL_MIGRATION_NAMES.slice(0, ALL_MIGRATION_NAMES.indexOf(CONTRACT_MIGRATION_NAMES[0]!)) : ALL_MIGRATION_NAMES
