import { existsSync, readdirSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { MIGRATIONS_DIR } from './migration-provider.ts'

const TEMPLATE = `import { type Kysely } from 'kysely'
import { applySteps, revertSteps, type Step } from '../online/step.ts'

// Frozen: the tables, columns and SQL this migration acts on are its own, written out here as of
// today; import only machinery (kysely, ../online), never the runtime (see README.md in this folder).
const steps: Step[] = [
  // e.g. addColumn({ ... }), index({ table: 'skills', name: 'skills_x_idx', columns: ['x'] }), notNull('skills', 'x')
]

export const up = (db: Kysely<any>) => applySteps(db, steps)
export const down = (db: Kysely<any>) => revertSteps(db, steps)
`

/**
 * Creates `NNNN_<name>.ts` after the newest migration and returns its path.
 * Names are lower-case words joined by `_`, so sorting by name is sorting by order.
 */
export function makeMigration(name: string, dir = MIGRATIONS_DIR): string {
  if (!/^[a-z][a-z0-9_]{0,62}$/.test(name)) {
    throw new Error(`migration name "${name}" is not allowed: use lower-case letters, digits and _ (e.g. add_skill_tags)`)
  }
  const existing = readdirSync(dir).filter((f) => /^\d{4}_.*\.ts$/.test(f) && !f.endsWith('.d.ts'))
  if (existing.length === 0) {
    // An installed copy of skills-db holds compiled migrations only (dist/migrations).
    throw new Error(`make writes a migration into skills-db's own source (src/migrations), and ${dir} holds none: run it in a checkout of skills-db`)
  }
  const clash = existing.find((f) => f.slice(5, -3) === name)
  if (clash) throw new Error(`a migration named "${name}" already exists: ${clash}`)
  const next = Math.max(0, ...existing.map((f) => Number(f.slice(0, 4)))) + 1
  const file = path.join(dir, `${String(next).padStart(4, '0')}_${name}.ts`)
  if (existsSync(file)) throw new Error(`${file} already exists`)
  writeFileSync(file, TEMPLATE, { flag: 'wx' })
  return file
}
