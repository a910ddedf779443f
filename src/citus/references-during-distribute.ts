import { sql, type Kysely, type QueryResult, type Transaction } from 'kysely'
import { forget, readRecorded, record } from '../online/recorded-settings.ts'
import { LockRetryExhausted, withLockRetry } from '../online/lock-retry.ts'
import { progress, run } from '../online/run-context.ts'
import { step } from './steps.ts'

/** The foreign keys a run dropped, as `[{ table, name, definition }]`, until they are back. */
export const FOREIGN_KEYS = 'citus_foreign_keys'
/** The reference-clearing triggers a run dropped, as `[{ table, name, definition, enabled }]`, until they are back. */
export const CLEARING_TRIGGERS = 'citus_clearing_triggers'

/**
 * What the clearing triggers (0010's clear_references on users and skills) do when a row of their
 * table is deleted: set these columns to null in the deleted row's tenant, which is what the
 * single-tenant schema's ON DELETE SET NULL did. While they are off, the sweep does it instead.
 * (test/citus.test.ts reads the functions' bodies to keep this list true.)
 */
export const CLEARED_BY: Record<string, { parent: string; references: { table: string; column: string }[] }> = {
  'skills_db.users_clear_references': {
    parent: 'users',
    references: [{ table: 'skills', column: 'author_id' }, { table: 'usage_events', column: 'user_id' },
      { table: 'skill_versions', column: 'created_by' }, { table: 'skill_reviews', column: 'requested_by' }],
  },
  'skills_db.skills_clear_references': { parent: 'skills', references: [{ table: 'usage_events', column: 'skill_id' }] },
}

interface DroppedKey { table: string; name: string; definition: string }
interface DroppedTrigger { table: string; name: string; definition: string; enabled: string }

/**
 * Why the clearing triggers go while distribute moves the tables: a trigger runs where its row is,
 * and until the table it clears references in is in the same place as its own, Citus refuses the
 * trigger's update, and with it the app's delete. Measured in the Citus suite's load, a skill and a
 * user deleted in every seventh request: 997 of 19,534 requests failed with "cannot execute a
 * distributed query from a query on a shard" (the trigger on a Citus local table's shard, the
 * other table distributed) or "cannot perform query on placements that were modified in this
 * transaction by a different user" (the trigger runs as its owner, on a placement the request had
 * written as the app role); and distributed the other way round, the trigger on a worker found no
 * table to update (an outside review: 46 of 355 deletes). No order of the tables avoids both.
 *
 * So: recorded, then dropped (the foreign keys they serve are dropped too, until every table is
 * distributed), and `referencesBack` puts them back and clears what they would have cleared. Only
 * while a table is left to distribute (a rerun that finds every table distributed leaves those a
 * killed run put back where they are); idempotent.
 */
export async function clearingTriggersOff(conn: Kysely<any>, tablesLeft: number): Promise<void> {
  if (tablesLeft === 0) return
  const recorded = await readRecorded(conn, CLEARING_TRIGGERS)
  const triggers: DroppedTrigger[] = recorded ? JSON.parse(recorded) : (await sql<DroppedTrigger>`
    select c.relname as table, t.tgname as name, pg_catalog.pg_get_triggerdef(t.oid) as definition, t.tgenabled as enabled
    from pg_catalog.pg_trigger t join pg_catalog.pg_class c on c.oid = t.tgrelid join pg_catalog.pg_proc p on p.oid = t.tgfoid
    where c.relnamespace = 'public'::regnamespace and not t.tgisinternal
      and p.pronamespace::regnamespace::text || '.' || p.proname = any(${Object.keys(CLEARED_BY)}::text[])
    order by 1, 2`.execute(conn)).rows
  if (!recorded) await record(conn, CLEARING_TRIGGERS, JSON.stringify(triggers), { replace: true })
  for (const t of triggers) {
    await step(`drop trigger ${t.table}.${t.name} (its references cleared by a sweep, and it back, below)`, () =>
      withLockRetry(conn, t.table, (trx) => sql`drop trigger if exists ${sql.id(t.name)} on ${sql.table(t.table)}`.execute(trx)))
  }
}

/**
 * The references the run dropped, back: the clearing triggers first (a delete of a skill with
 * usage events would otherwise be refused by the key once it is there), then each foreign key
 * NOT VALID (a moment's lock; from then on it checks, and cascades, every write), then a sweep
 * that does what the dropped ones would have done to the rows deleted meanwhile (ON DELETE
 * CASCADE: the orphaned rows deleted; a reference a clearing trigger clears: set to null), then
 * each key validated, which reads the rows without blocking the app's writes. A reference left
 * dangling otherwise (a key with no action) fails its validation, named, and a rerun tries again.
 * Then the records go. (undistribute does this too, after a killed run.)
 */
export async function referencesBack(conn: Kysely<any>, keys: DroppedKey[]): Promise<void> {
  const recorded = await readRecorded(conn, CLEARING_TRIGGERS)
  const triggers: DroppedTrigger[] = recorded ? JSON.parse(recorded) : []
  for (const t of triggers) {
    const { rows } = await sql`select 1 from pg_catalog.pg_trigger where tgname = ${t.name} and tgrelid = ${`public.${t.table}`}::regclass`.execute(conn)
    if (rows.length > 0) continue
    await step(`trigger ${t.table}.${t.name} back`, () => withLockRetry(conn, t.table, async (trx) => {
      await sql.raw(t.definition).execute(trx)
      if (t.enabled === 'A') await sql`alter table ${sql.table(t.table)} enable always trigger ${sql.id(t.name)}`.execute(trx)
    }))
  }
  for (const k of keys) {
    const { rows: present } = await sql`select 1 from pg_catalog.pg_constraint where conname = ${k.name} and conrelid = ${`public.${k.table}`}::regclass`.execute(conn)
    if (present.length === 0) await step(`add foreign key ${k.table}.${k.name} back`, () => withLockRetry(conn, k.table, (trx) => sql`alter table ${sql.table(k.table)} add constraint ${sql.id(k.name)} ${sql.raw(k.definition)} not valid`.execute(trx)))
  }
  await danglingReferencesSwept(conn, keys)
  for (const k of keys) {
    const { rows: present } = await sql<{ valid: boolean }>`select convalidated as valid from pg_catalog.pg_constraint where conname = ${k.name} and conrelid = ${`public.${k.table}`}::regclass`.execute(conn)
    if (!present[0]?.valid) await step(`validate foreign key ${k.table}.${k.name}`, () => withLockRetry(conn, k.table, (trx) => sql`alter table ${sql.table(k.table)} validate constraint ${sql.id(k.name)}`.execute(trx)))
  }
  await forget(conn, FOREIGN_KEYS)
  await forget(conn, CLEARING_TRIGGERS)
}

/**
 * Rows that reference a row deleted while the keys were off: deleted where the key cascades,
 * their reference set to null where a clearing trigger would have (CLEARED_BY). Passes until one
 * changes nothing: a cascade may orphan rows of another key.
 */
async function danglingReferencesSwept(conn: Kysely<any>, keys: DroppedKey[]): Promise<void> {
  const cleared = Object.values(CLEARED_BY).flatMap((c) => c.references.map((r) => ({ ...r, parent: c.parent })))
  const actions = keys.flatMap((k) => {
    const parsed = /^FOREIGN KEY \(([^)]+)\) REFERENCES (?:public\.)?"?(\w+)"?\s*\(([^)]+)\)(.*)$/i.exec(k.definition)
    if (!parsed) return []
    const [, from, parent, to, rest] = parsed
    const columns = from!.split(',').map((c) => c.trim().replace(/^"|"$/g, ''))
    const referenced = to!.split(',').map((c) => c.trim().replace(/^"|"$/g, ''))
    const own = columns.filter((c) => c !== 'tenant_id')
    const kind = /ON DELETE CASCADE/i.test(rest!) ? 'delete' as const
      : own.length === 1 && cleared.some((c) => c.table === k.table && c.column === own[0] && c.parent === parent) ? 'clear' as const : undefined
    return kind ? [{ ...k, parent: parent!, columns, referenced, kind, column: own[0]! }] : []
  })
  if (actions.length === 0) return
  const swept = new Map<string, number>()
  await step('the rows that reference a row deleted while the keys were off: deleted where the key cascades, the reference set to null where a clearing trigger would have', async () => {
    for (let pass = 0; pass < 5; pass++) {
      let changed = 0
      for (const a of actions) {
        const dangling = sql`${sql.join(a.columns.map((c) => sql`c.${sql.id(c)} is not null`), sql` and `)}
          and not exists (select 1 from ${sql.table(a.parent)} p where ${sql.join(a.columns.map((c, i) => sql`p.${sql.id(a.referenced[i]!)} = c.${sql.id(c)}`), sql` and `)})`
        const n = await sweptOnce(conn, a.table, (trx) => a.kind === 'delete'
          ? sql`delete from ${sql.table(a.table)} c where ${dangling}`.execute(trx)
          : sql`update ${sql.table(a.table)} c set ${sql.id(a.column)} = null where ${dangling}`.execute(trx))
        const what = `${a.table}.${a.column} ${a.kind === 'delete' ? 'deleted' : 'cleared'}`
        if (n > 0) swept.set(what, (swept.get(what) ?? 0) + n)
        changed += n
      }
      if (changed === 0) break
    }
  })
  progress(`  rows that referenced a row deleted meanwhile: ${swept.size === 0 ? 'none' : [...swept].map(([what, n]) => `${what}: ${n}`).join(', ')}`)
}

/**
 * One sweep statement, in a REPEATABLE READ transaction of its own (Citus begins the workers'
 * the same): a row the app changes after the statement's snapshot makes it fail (40001) rather
 * than act on what it saw before. In READ COMMITTED, an outside review pointed a dangling rating at
 * a skill it had just added, committed while the sweep waited for the row, and the sweep deleted
 * it: the row is re-checked after the wait, its NOT EXISTS with the statement's old snapshot.
 * Retried on that, on a lock the app holds past the run's lock timeout, and on a deadlock, until
 * the run's lock retry budget is spent. Returns the rows it changed.
 */
async function sweptOnce(conn: Kysely<any>, table: string, statement: (trx: Transaction<any>) => Promise<QueryResult<unknown>>): Promise<number> {
  const settings = run()
  const deadline = Date.now() + settings.lockRetryBudgetMs
  for (let attempt = 0; ; attempt++) {
    try {
      const result = await conn.transaction().setIsolationLevel('repeatable read').execute(async (trx) => {
        await sql`select pg_catalog.set_config('lock_timeout', ${`${settings.lockTimeoutMs}ms`}::text, true)`.execute(trx)
        return statement(trx)
      })
      return Number(result.numAffectedRows ?? 0n)
    } catch (error) {
      const code = (error as { code?: string }).code
      if (!['40001', '55P03', '40P01'].includes(code ?? '') || Date.now() > deadline) {
        if (code && ['40001', '55P03', '40P01'].includes(code)) {
          throw new LockRetryExhausted(`gave up sweeping table ${table}: the app kept changing or holding its rows for ${Math.round(settings.lockRetryBudgetMs / 1000)} s; rerun the migration later (it resumes where it stopped)`)
        }
        throw error
      }
      const backoff = Math.min(2000, settings.lockTimeoutMs * 2 ** Math.min(attempt, 6))
      await new Promise((r) => setTimeout(r, backoff / 2 + Math.random() * backoff))
    }
  }
}
