import { promises as fs } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { FileMigrationProvider, type Migration, type MigrationProvider } from 'kysely/migration'
import { inRun, progress, run } from '../online/run-context.ts'
import { declaredPhase, type Phase } from './migration-phases.ts'

export const MIGRATIONS_DIR = fileURLToPath(new URL('../migrations/', import.meta.url))

/** The guard that stops other migrators at the start of the folder (see the file); never run here. */
export const GUARD_MIGRATION = '0000_use_the_skills_db_migrator'

/**
 * A file of the migrations folder does not load, or exports no `up(db)` function; the message
 * names the file. A failed run's {@link MigrationError} (kind `invalid-migration`) carries it as its cause.
 */
export class InvalidMigrationError extends Error {
  /** Always `'InvalidMigrationError'`, so a log line or a check of `error.name` tells it apart. */
  override name = 'InvalidMigrationError'
}

/** skills-db's migrations, and the phase of each (see migration-phases.ts). */
export interface SkillsDbMigrationProvider extends MigrationProvider {
  phases(): Promise<ReadonlyMap<string, Phase>>
  /** The same migrations, less those `keep` rejects: what one run may apply, with what it must know. */
  only(keep: (name: string) => boolean): MigrationProvider
}

/** What one run learns from the migrations as they run: which one is under way, when each started and how long it took. */
export interface RunJournal {
  running?: string
  timings: Map<string, { startedAt: Date; durationMs: number }>
}

/**
 * Loads the migration files and wraps each so that it runs with its name in the run context, and
 * its direction, result and duration are logged and kept in `journal`. A file that does not load,
 * or has no `up`, is an error naming the file, before anything runs.
 */
export function skillsDbMigrationProvider(
  { folder = MIGRATIONS_DIR, journal }: { folder?: string; journal?: RunJournal } = {},
): SkillsDbMigrationProvider {
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
  const phases = new Map<string, Phase>()
  // Loaded once per provider: the migrator, Kysely and the phase gates all ask.
  let loaded: Promise<Record<string, Migration>> | undefined
  const provider: SkillsDbMigrationProvider = {
    getMigrations: () => (loaded ??= load()),
    async phases() {
      await provider.getMigrations()
      return phases
    },
    only: (keep) => ({
      async getMigrations() {
        return Object.fromEntries(Object.entries(await provider.getMigrations()).filter(([name]) => keep(name)))
      },
    }),
  }
  async function load(): Promise<Record<string, Migration>> {
    const migrations: Record<string, Migration> = await files.getMigrations()
    const wrapped: Record<string, Migration> = {}
    for (const [name, migration] of Object.entries(migrations)) {
      if (name === GUARD_MIGRATION) continue
      phases.set(name, declaredPhase((migration as { phase?: unknown }).phase))
      wrapped[name] = {
        up: timed(name, 'up', migration.up, journal),
        ...(migration.down ? { down: timed(name, 'down', migration.down, journal) } : {}),
      }
    }
    return wrapped
  }
  return provider
}

function timed(name: string, direction: string, step: Migration['up'], journal?: RunJournal): Migration['up'] {
  return (db) => inRun({ migration: name }, async () => {
    await run().beforeEachMigration?.(db)
    const started = performance.now()
    const startedAt = new Date()
    progress(`${direction.padEnd(4)} ${name} …`)
    if (journal) journal.running = name
    try {
      await step(db)
    } catch (error) {
      progress(`${direction.padEnd(4)} ${name} failed after ${ms(started)} ms`)
      throw error
    }
    journal?.timings.set(name, { startedAt, durationMs: ms(started) })
    if (journal) journal.running = undefined
    progress(`${direction.padEnd(4)} ${name} done in ${ms(started)} ms`)
  })
}

const ms = (since: number) => Math.round(performance.now() - since)
