import { promises as fs } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { FileMigrationProvider, type Migration, type MigrationProvider } from 'kysely/migration'
import type { MigrationLogger } from './migration-logger.ts'

export const MIGRATIONS_DIR = fileURLToPath(new URL('../migrations/', import.meta.url))

/** The guard that stops other migrators at the start of the folder (see the file); never run here. */
export const GUARD_MIGRATION = '0000_use_the_skills_db_migrator'

export class InvalidMigrationError extends Error {
  override name = 'InvalidMigrationError'
}

/**
 * Loads the migration files and wraps each so its direction, result and duration are reported.
 * A file that does not load, or has no `up`, is an error naming the file, before anything runs.
 */
/** skills-db's migrations, and which of them belong to the contract phase (they export `phase = 'contract'`). */
export interface SkillsDbMigrationProvider extends MigrationProvider {
  contractMigrations(): Promise<string[]>
}

export function timedMigrationProvider(logger: MigrationLogger, folder = MIGRATIONS_DIR, running?: { name?: string }): SkillsDbMigrationProvider {
  const files = new FileMigrationProvider({
    fs,
    path,
    migrationFolder: folder,
    import: async (file: string) => {
      try {
        return await import(file)
      } catch (error) {
        throw new InvalidMigrationError(`migration ${path.basename(file)} failed to load: ${(error as Error).message.split('\n')[0]}`)
      }
    },
    onFileIgnored: (file: string, reason: string) => {
      if (reason !== 'NotMigration') return
      throw new InvalidMigrationError(`migration ${file.replace(/\.[cm]?[jt]s$/, '')} does not export an up(db) function`)
    },
  } as any)
  const contract = new Set<string>()
  const provider: SkillsDbMigrationProvider = {
    async getMigrations() {
      const migrations: Record<string, Migration> = await files.getMigrations()
      const wrapped: Record<string, Migration> = {}
      for (const [name, migration] of Object.entries(migrations)) {
        if (name === GUARD_MIGRATION) continue
        if ((migration as { phase?: unknown }).phase === 'contract') contract.add(name)
        wrapped[name] = {
          up: timed(name, 'up', migration.up, logger, running),
          ...(migration.down ? { down: timed(name, 'down', migration.down, logger, running) } : {}),
        }
      }
      return wrapped
    },
    async contractMigrations() {
      await provider.getMigrations()
      return [...contract].sort()
    },
  }
  return provider
}

/** `running.name` says which migration is under way, for errors that escape the migrator itself. */
function timed(name: string, direction: string, step: Migration['up'], logger: MigrationLogger, running?: { name?: string }): Migration['up'] {
  return async (db) => {
    const started = performance.now()
    logger.info(`${direction.padEnd(4)} ${name} …`)
    if (running) running.name = name
    try {
      await step(db)
    } catch (error) {
      logger.info(`${direction.padEnd(4)} ${name} failed after ${ms(started)}`)
      throw error
    }
    if (running) running.name = undefined
    logger.info(`${direction.padEnd(4)} ${name} done in ${ms(started)}`)
  }
}

const ms = (since: number) => `${Math.round(performance.now() - since)} ms`
