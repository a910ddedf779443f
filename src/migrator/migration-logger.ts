/** Where the migrator reports progress; the CLI prints it, an app passes its own logger or nothing. */
export interface MigrationLogger {
  /** One line of progress (a migration starts, a step waits for a lock, …), without a newline. */
  info(message: string): void
}

export const silentLogger: MigrationLogger = { info() {} }
