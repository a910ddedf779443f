import type { MigrationLogger } from '../migrator/migration-logger.ts'

// Migrations receive only `db`; the migrator installs its logger here for the duration of a run.
let current: MigrationLogger | undefined

export function setProgressLogger(logger: MigrationLogger | undefined): void {
  current = logger
}

export function progress(message: string): void {
  current?.info(message)
}
