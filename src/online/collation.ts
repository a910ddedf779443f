import { sql } from 'kysely'
import { ident } from './catalog.ts'
import type { Step } from './step.ts'

/**
 * A collation copied from a built-in one (`from`, e.g. "C"), under a schema-qualified name. In a
 * schema the app role has no USAGE on, the app role cannot name it: an index built in it serves
 * uniqueness, ON CONFLICT and the owner's functions, and no query of the app role (see IndexSpec.collate).
 * Deterministic, as its source, so equality (and so uniqueness) is byte equality, as under any other.
 */
export function collation(name: string, from: string): Step {
  const [schema, object] = name.split('.').map(ident) as [string, string]
  return {
    name: `collation ${name}`,
    up: async (db) => void (await sql`create collation if not exists ${sql.id(schema, object)} from ${sql.id(from)}`.execute(db)),
    down: async (db) => void (await sql`drop collation if exists ${sql.id(schema, object)}`.execute(db)),
  }
}
