import { sql, type Kysely } from 'kysely'
import { ident } from './catalog.ts'
import { lockInOrder, referencingFirst, withLockRetry } from './lock-retry.ts'
import { forget, readRecorded, record } from './recorded-settings.ts'
import type { Step } from './step.ts'

/** Every column of `table` (dropped ones aside), in order. */
async function columnsOf(db: Kysely<any>, table: string): Promise<{ name: string; type: string; collecting: boolean; target: number }[]> {
  const { rows } = await sql<{ name: string; type: string; collecting: boolean; target: number }>`
    select a.attname as name, pg_catalog.format_type(a.atttypid, a.atttypmod) as type,
      coalesce(a.attstattarget, -1) <> 0 as collecting, coalesce(a.attstattarget, -1)::int as target
    from pg_catalog.pg_attribute a
    where a.attrelid = pg_catalog.to_regclass(${table}::text) and a.attnum > 0 and not a.attisdropped order by a.attnum`.execute(db)
  return rows
}

interface PolicyDefinition { name: string; permissive: boolean; command: string; roles: string[]; using: string | null; check: string | null }

/** A table's policies as CREATE POLICY takes them back (expressions as PostgreSQL prints them). */
async function policiesOf(db: Kysely<any>, table: string): Promise<PolicyDefinition[]> {
  const { rows } = await sql<PolicyDefinition>`
    select p.polname as name, p.polpermissive as permissive,
      case p.polcmd when 'r' then 'select' when 'a' then 'insert' when 'w' then 'update' when 'd' then 'delete' else 'all' end as command,
      array(select r.rolname::text from pg_catalog.unnest(p.polroles) o join pg_catalog.pg_roles r on r.oid = o order by 1) as roles,
      pg_catalog.pg_get_expr(p.polqual, p.polrelid) as using, pg_catalog.pg_get_expr(p.polwithcheck, p.polrelid) as check
    from pg_catalog.pg_policy p where p.polrelid = pg_catalog.to_regclass(${table}::text) order by p.polname`.execute(db)
  return rows
}

/**
 * No planner statistics on `table`'s columns (every one, when `columns` is absent): with row
 * security, the planner still estimates with statistics gathered from every tenant's rows wherever
 * the operator is leakproof (text and number comparisons are), so EXPLAIN's estimates would
 * recover other tenants' values. SET STATISTICS 0 stops ANALYZE from collecting; altering a column
 * to its own type drops what was collected (the owner cannot delete from pg_statistic): no
 * rewrite, its indexes and constraints reused as they are, one brief exclusive lock (but a
 * validated CHECK on the column is checked again, a scan: take statistics away before adding one).
 * The foreign keys on those columns are re-created too (not validated again), which locks the
 * tables on their other side: those locks are taken first, in the app's order (lockInOrder).
 * The targets the columns had are recorded first: `down` gives them back and analyzes, so the
 * columns that had statistics have them again.
 */
export function withoutStatistics(table: string, { columns, stillCollecting = false }: { columns?: readonly string[]; stillCollecting?: boolean } = {}): Step {
  // stillCollecting: only the columns whose target is not 0 yet (a safety net after a step that may
  // have reset one): altering a column that a validated CHECK reads re-checks every row under the lock.
  const chosen = async (db: Kysely<any>) => {
    const all = (await columnsOf(db, table)).filter((c) => !stillCollecting || c.collecting)
    return columns ? all.filter((c) => columns.includes(c.name)) : all
  }
  return {
    name: `no statistics on ${table}`,
    async up(db) {
      const cols = await chosen(db)
      if (cols.length === 0) return
      const key = `statistics targets of ${table}`
      if ((await readRecorded(db, key)) === undefined) {
        await record(db, key, JSON.stringify(Object.fromEntries(cols.filter((c) => c.target !== 0).map((c) => [c.name, c.target]))))
      }
      const tables = await referencingFirst(db, table, cols.map((c) => c.name))
      await withLockRetry(db, table, async (trx) => {
        await lockInOrder(trx, tables)
        // PostgreSQL will not alter the type of a column a policy uses: the table's policies are
        // dropped and created again, as they were, in the same transaction (nobody sees it without).
        const policies = await policiesOf(trx, table)
        for (const p of policies) await sql`drop policy ${sql.id(p.name)} on ${sql.table(table)}`.execute(trx)
        await sql`alter table ${sql.table(table)} ${sql.join(cols.map((c) =>
          sql`alter column ${sql.id(ident(c.name))} set statistics 0, alter column ${sql.id(c.name)} type ${sql.raw(c.type)}`))}`.execute(trx)
        for (const p of policies) {
          await sql`create policy ${sql.id(p.name)} on ${sql.table(table)} as ${sql.raw(p.permissive ? 'permissive' : 'restrictive')}
            for ${sql.raw(p.command)} to ${p.roles.length ? sql.join(p.roles.map((r) => sql.id(r))) : sql`public`}
            ${p.using === null ? sql`` : sql`using (${sql.raw(p.using)})`} ${p.check === null ? sql`` : sql`with check (${sql.raw(p.check)})`}`.execute(trx)
        }
      })
    },
    async down(db) {
      const key = `statistics targets of ${table}`
      const recorded = await readRecorded(db, key)
      if (recorded === undefined) return
      const targets = JSON.parse(recorded) as Record<string, number>
      const cols = (await columnsOf(db, table)).filter((c) => c.name in targets)
      if (cols.length > 0) {
        await withLockRetry(db, table, (trx) =>
          sql`alter table ${sql.table(table)} ${sql.join(cols.map((c) => sql`alter column ${sql.id(ident(c.name))} set statistics ${sql.raw(String(Math.trunc(targets[c.name]!)))}`))}`.execute(trx))
        await withLockRetry(db, table, (trx) => sql`analyze ${sql.table(table)}`.execute(trx), { appSafe: true })
      }
      await forget(db, key)
    },
  }
}
