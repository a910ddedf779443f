import { promises as fs } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { FileMigrationProvider, type Migration, type MigrationProvider } from 'kysely/migration'
import type { MigrationLogger } from './migration-logger.ts'

export const MIGRATIONS_DIR = fileURLToPath(new URL('../migrations/', import.meta.url))

export class InvalidMigrationError extends Error {
  override name = 'InvalidMigrationError'
}

/**
 * Loads the migration files and wraps each so its direction, result and duration are reported.
 * A file that does not load, or has no `up`, is an error naming the file, before anything runs.
 */
export function timedMigrationProvider(logger: MigrationLogger, folder = MIGRATIONS_DIR): MigrationProvider {
  const files = new FileMigrationProvider({ fs, path, migrationFolder: folder, import: (p: string) => import(p) } as any)
  return {
    async getMigrations() {
      let migrations: Record<string, Migration>
      try {
        migrations = await files.getMigrations()
      } catch (error) {
        throw new InvalidMigrationError(`a migration in ${folder} failed to load: ${(error as Error).message.split('\n')[0]}`)
      }
      const wrapped: Record<string, Migration> = {}
      for (const [name, migration] of Object.entries(migrations)) {
        if (typeof migration?.up !== 'function') {
          throw new InvalidMigrationError(`migration ${name} does not export an up(db) function`)
        }
        wrapped[name] = {
          up: timed(name, 'up', migration.up, logger),
          ...(migration.down ? { down: timed(name, 'down', migration.down, logger) } : {}),
        }
      }
      return wrapped
    },
  }
}

function timed(name: string, direction: string, step: Migration['up'], logger: MigrationLogger): Migration['up'] {
  return async (db) => {
    const started = performance.now()
    logger.info(`${direction.padEnd(4)} ${name} …`)
    try {
      await step(db)
    } catch (error) {
      logger.info(`${direction.padEnd(4)} ${name} failed after ${ms(started)}`)
      throw error
    }
    logger.info(`${direction.padEnd(4)} ${name} done in ${ms(started)}`)
  }
}

const ms = (since: number) => `${Math.round(performance.now() - since)} ms`
