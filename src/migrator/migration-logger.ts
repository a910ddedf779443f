/** Where the migrator reports progress; the CLI prints it, an app passes its own logger or nothing. */
export interface MigrationLogger {
  info(message: string): void
}

export const silentLogger: MigrationLogger = { info() {} }
