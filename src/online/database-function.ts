import { sql, type RawBuilder } from 'kysely'
import { appRoleName } from './app-role.ts'
import type { Step } from './step.ts'

export interface FunctionSpec {
  /** Schema-qualified name with argument types, as DROP FUNCTION takes it: `public.f(text)`. */
  signature: string
  /** The whole CREATE OR REPLACE FUNCTION statement (SECURITY DEFINER ones pin search_path). */
  definition: RawBuilder<unknown>
  /** Who may call it besides the owner: nobody, or the application role. */
  executeBy?: 'app role'
}

/** A function, callable by nobody but its owner (and the application role, when asked). */
export function databaseFunction(spec: FunctionSpec): Step {
  const signature = sql.raw(spec.signature)
  return {
    name: `function ${spec.signature}`,
    async up(db) {
      await spec.definition.execute(db)
      await sql`revoke all on function ${signature} from public`.execute(db)
      if (spec.executeBy === 'app role') await sql`grant execute on function ${signature} to ${sql.id(await appRoleName(db))}`.execute(db)
    },
    down: async (db) => void (await sql`drop function if exists ${signature}`.execute(db)),
  }
}

/**
 * A new body for a function an earlier migration made, which triggers or callers already name: `up`
 * puts `definition` in place, `down` the `previous` one (that migration's own, copied in). Grants and
 * the triggers that call it are untouched either way.
 */
export function replacedFunction(spec: { signature: string; definition: RawBuilder<unknown>; previous: RawBuilder<unknown> }): Step {
  return {
    name: `new body of ${spec.signature}`,
    up: async (db) => void (await spec.definition.execute(db)),
    down: async (db) => void (await spec.previous.execute(db)),
  }
}
