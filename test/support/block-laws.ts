import { sql, type Kysely, type KyselyPlugin, type PluginTransformQueryArgs, type PluginTransformResultArgs, type QueryResult, type RootOperationNode, type UnknownRow } from 'kysely'
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest'
import { takeSchemaSnapshot } from '../../src/catalog/schema-snapshot.ts'
import { createDb } from '../../src/connection/create-db.ts'
import { inRun, type RunContext } from '../../src/online/run-context.ts'
import type { Step } from '../../src/online/step.ts'
import { useTestDatabase } from './database.ts'

/**
 * What a building block must do, on a toy schema on the real server (node-pg-migrate pins each
 * operation and its reverse the same way):
 * - up twice, down twice, up → down → up: the catalog after each is the one expected;
 * - killed between any two of its statements, going up or down, it completes when run again.
 */
export interface BlockCase {
  /** The toy schema before the step (run once, as the superuser). */
  setup(db: Kysely<any>, names: Names): Promise<void>
  /** The block under test. */
  step(names: Names): Step
  /** What `down` keeps on purpose (the record of roles it created, which outlive it); compared on the way up only. */
  downKeeps?: ('recorded' | 'roles')[]
  /** The run the step runs in (its app role, say); quiet defaults otherwise. */
  context?(names: Names): Partial<RunContext>
}

/** Roles for the block (cluster-wide, so named for this test run): `role` exists, `newRole` is for the block to create. */
export interface Names {
  role: string
  newRole: string
}

/**
 * Stands for the process dying before a statement: nothing from it on reaches the server, and its
 * session then ends (the harness closes the connection), so its open transaction is rolled back and
 * its session settings go, as the server does for a client that died. Unlike a real death, the
 * step's own clean-up still runs in-process; test/faults kills real processes.
 */
export class Killed extends Error {
  override name = 'Killed'
}

/** Counts the statements sent through it and, given a limit, stops the client before the one past it. */
class StatementCounter implements KyselyPlugin {
  sent = 0
  killed = false
  constructor(private readonly limit = Infinity) {}
  transformQuery(args: PluginTransformQueryArgs): RootOperationNode {
    if (this.sent >= this.limit) {
      this.killed = true
      throw new Killed(`killed before statement ${this.sent + 1}`)
    }
    this.sent++
    return args.node
  }
  async transformResult(args: PluginTransformResultArgs): Promise<QueryResult<UnknownRow>> {
    return args.result
  }
}

/**
 * The catalog a block may touch: tables (columns, constraints, indexes, triggers, policies, row
 * security), privileges on them and on schema public, functions with their privileges, per-column
 * statistics targets, the facts recorded in skills_db.settings, and the `roles` named (their
 * attributes and memberships).
 */
export async function catalogState(db: Kysely<any>, roles: readonly string[] = []): Promise<unknown> {
  const rows = async <R>(q: ReturnType<typeof sql<R>>) => (await q.execute(db)).rows
  return {
    tables: await takeSchemaSnapshot(db),
    // Privileges as they apply (a NULL ACL is the default one), not as they happen to be stored.
    privileges: await rows(sql`select c.relname, coalesce(c.relacl, acldefault('r', c.relowner))::text as acl from pg_class c
      where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p') order by 1`),
    publicSchema: await rows(sql`select coalesce(nspacl, acldefault('n', nspowner))::text as acl from pg_namespace where nspname = 'public'`),
    functions: await rows(sql`select p.oid::regprocedure::text as name, pg_get_functiondef(p.oid) as definition,
        coalesce(p.proacl, acldefault('f', p.proowner))::text as acl
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace where n.nspname in ('public', 'skills_db') order by 1`),
    // In which session_replication_role each trigger fires (pg_get_triggerdef does not say).
    triggerModes: await rows(sql`select c.relname, t.tgname, t.tgenabled::text as mode from pg_trigger t join pg_class c on c.oid = t.tgrelid
      where c.relnamespace = 'public'::regnamespace and not t.tgisinternal order by 1, 2`),
    collations: await rows(sql`select n.nspname, c.collname, c.collprovider::text as provider from pg_collation c join pg_namespace n on n.oid = c.collnamespace
      where n.nspname in ('public', 'skills_db') order by 1, 2`),
    statistics: await rows(sql`select c.relname, a.attname, a.attstattarget::text as target from pg_attribute a join pg_class c on c.oid = a.attrelid
      where c.relnamespace = 'public'::regnamespace and c.relkind = 'r' and a.attnum > 0 and not a.attisdropped order by 1, 2`),
    roles: await rows(sql`select r.rolname, r.rolcanlogin, r.rolsuper, r.rolinherit, r.rolcreaterole, r.rolcreatedb, r.rolbypassrls, r.rolreplication,
        array(select g.rolname::text from pg_auth_members m join pg_roles g on g.oid = m.roleid where m.member = r.oid order by 1) as member_of
      from pg_roles r where r.rolname = any(${[...roles]}::text[]) order by 1`),
    recorded: (await rows<{ t: string | null }>(sql`select to_regclass('skills_db.settings')::text as t`))[0]?.t
      ? await rows(sql`select key, value from skills_db.settings order by key`)
      : [],
  }
}

/** The laws above, as a describe block for one building block. */
export function blockLaws(name: string, block: BlockCase): void {
  describe(`${name}: up twice, down twice, up → down → up, and killed between any two statements`, () => {
    const t = useTestDatabase('empty')
    const role = `${inject('runId')}_blk_${name.replace(/^online\//, '').replace(/\W+/g, '_').slice(0, 24)}`
    const names: Names = { role, newRole: `${role}_new` }
    let before: unknown
    let applied: unknown
    /** The state, less what down keeps on purpose, for comparisons with the state before. */
    const asBefore = (state: unknown) => {
      const copy = { ...(state as Record<string, unknown>) }
      for (const key of block.downKeeps ?? []) delete copy[key]
      return copy
    }
    /** The step in its run, on a connection of its own; how many statements it sent. */
    const runStep = async (direction: 'up' | 'down'): Promise<number> => {
      const db = createDb<any>(t.url, { max: 1 })
      const counter = new StatementCounter()
      try {
        await inRun(block.context?.(names) ?? {}, () => block.step(names)[direction](db.withPlugin(counter)))
      } finally {
        // A killed client's session ends with it: its session settings and open transaction go too.
        await db.destroy()
      }
      return counter.sent
    }
    /** Killed after `limit` statements: the kill must land, and only the kill may stop it (a step may finish its clean-up without the server). */
    const killStep = async (direction: 'up' | 'down', limit: number): Promise<void> => {
      const db = createDb<any>(t.url, { max: 1 })
      const counter = new StatementCounter(limit)
      try {
        await inRun(block.context?.(names) ?? {}, () => block.step(names)[direction](db.withPlugin(counter)))
      } catch (error) {
        if (!(error instanceof Killed)) throw error
      } finally {
        await db.destroy()
      }
      expect(counter.killed, `${direction} sent fewer than ${limit + 1} statements`).toBe(true)
    }

    beforeAll(async () => {
      await sql.raw(`create role "${names.role}" nologin`).execute(t.admin)
      // Where the migrator keeps what steps record (it creates it before any migration runs).
      await sql`create schema if not exists skills_db`.execute(t.admin)
      await block.setup(t.admin, names)
      before = await catalogState(t.admin, [names.role, names.newRole])
    })
    afterAll(async () => {
      // Roles are cluster-wide: gone before the database is.
      for (const r of [names.role, names.newRole]) {
        await sql.raw(`drop owned by "${r}"`).execute(t.admin).catch(() => {})
        await sql.raw(`drop role if exists "${r}"`).execute(t.admin)
      }
    })

    it('up twice, down twice, up → down → up: the catalog each time as expected', async () => {
      await runStep('up')
      applied = await catalogState(t.admin, [names.role, names.newRole])
      expect(applied, 'up changed nothing').not.toEqual(before)
      await runStep('up')
      expect(await catalogState(t.admin, [names.role, names.newRole]), 'a second up').toEqual(applied)
      await runStep('down')
      expect(asBefore(await catalogState(t.admin, [names.role, names.newRole])), 'down').toEqual(asBefore(before))
      await runStep('down')
      expect(asBefore(await catalogState(t.admin, [names.role, names.newRole])), 'a second down').toEqual(asBefore(before))
      await runStep('up')
      expect(await catalogState(t.admin, [names.role, names.newRole]), 'up after down').toEqual(applied)
      await runStep('down')
    })

    it('killed between any two statements, up and down: run again, it completes', async () => {
      expect(applied, 'the first test ran').toBeDefined()
      const ups = await runStep('up')
      const downs = await runStep('down')
      expect(ups, 'statements of up').toBeGreaterThan(0)
      for (let k = 0; k < ups; k++) {
        await killStep('up', k)
        await runStep('up')
        expect(await catalogState(t.admin, [names.role, names.newRole]), `up killed after ${k} of ${ups} statements, then run again`).toEqual(applied)
        await runStep('down')
        expect(asBefore(await catalogState(t.admin, [names.role, names.newRole]))).toEqual(asBefore(before))
      }
      await runStep('up')
      for (let k = 0; k < downs; k++) {
        await killStep('down', k)
        await runStep('down')
        expect(asBefore(await catalogState(t.admin, [names.role, names.newRole])), `down killed after ${k} of ${downs} statements, then run again`).toEqual(asBefore(before))
        await runStep('up')
      }
      await runStep('down')
    })
  })
}
