import { sql, type Kysely } from 'kysely'

export interface TableSnapshot {
  columns: string[]
  constraints: string[]
  indexes: string[]
  triggers: string[]
  policies: string[]
  rowSecurity: 'off' | 'enabled' | 'forced'
}

/** Table name → its catalog description. Every entry is a readable line so a diff is a report. */
export type SchemaSnapshot = Record<string, TableSnapshot>

export interface SnapshotOptions {
  /** Tables to leave out, e.g. the migrator's own bookkeeping. */
  exclude?: readonly string[]
}

/**
 * Describes the tables of schema public from pg_catalog: columns (type, nullability, default),
 * constraints, indexes, triggers, policies and row security. Two databases with equal snapshots
 * have the same schema as far as the application can tell.
 */
export async function takeSchemaSnapshot(db: Kysely<any>, options: SnapshotOptions = {}): Promise<SchemaSnapshot> {
  const schema = 'public'
  const exclude = [...(options.exclude ?? []), '']
  const q = <R>(query: ReturnType<typeof sql<R>>) => query.execute(db).then((r) => r.rows)

  const tables = await q<{ table: string; rls: boolean; force: boolean }>(sql`
    select c.relname as table, c.relrowsecurity as rls, c.relforcerowsecurity as force
    from pg_class c join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = ${schema} and c.relkind in ('r', 'p') and c.relname <> all(${exclude})
    order by c.relname`)
  const columns = await q<{ table: string; line: string }>(sql`
    select c.relname as table,
      a.attname || ' ' || format_type(a.atttypid, a.atttypmod)
        || case when a.attnotnull then ' not null' else '' end
        || coalesce(' default ' || pg_get_expr(d.adbin, d.adrelid), '') as line
    from pg_attribute a
    join pg_class c on c.oid = a.attrelid join pg_namespace n on n.oid = c.relnamespace
    left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
    where n.nspname = ${schema} and c.relkind in ('r', 'p') and a.attnum > 0 and not a.attisdropped
    order by c.relname, a.attnum`)
  const constraints = await q<{ table: string; line: string }>(sql`
    select c.relname as table,
      k.conname || ': ' || pg_get_constraintdef(k.oid) || case when k.convalidated then '' else ' (not validated)' end as line
    from pg_constraint k join pg_class c on c.oid = k.conrelid join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = ${schema} and k.contype <> 'n' -- PG 18 lists NOT NULL as constraints; columns carry it already
    order by c.relname, k.conname`)
  const indexes = await q<{ table: string; line: string }>(sql`
    select c.relname as table,
      pg_get_indexdef(i.indexrelid) || case when i.indisvalid then '' else ' (INVALID)' end as line
    from pg_index i join pg_class c on c.oid = i.indrelid join pg_namespace n on n.oid = c.relnamespace
    join pg_class ic on ic.oid = i.indexrelid
    where n.nspname = ${schema}
    order by c.relname, ic.relname`)
  const triggers = await q<{ table: string; line: string }>(sql`
    select c.relname as table, pg_get_triggerdef(t.oid) as line
    from pg_trigger t join pg_class c on c.oid = t.tgrelid join pg_namespace n on n.oid = c.relnamespace
    where n.nspname = ${schema} and not t.tgisinternal
    order by c.relname, t.tgname`)
  const policies = await q<{ table: string; line: string }>(sql`
    select tablename as table,
      policyname || ' ' || cmd || ' to ' || array_to_string(roles, ',')
        || coalesce(' using ' || qual, '') || coalesce(' check ' || with_check, '') as line
    from pg_policies where schemaname = ${schema}
    order by tablename, policyname`)

  const snapshot: SchemaSnapshot = {}
  for (const t of tables) {
    const of = (rows: { table: string; line: string }[]) => rows.filter((r) => r.table === t.table).map((r) => r.line)
    snapshot[t.table] = {
      columns: of(columns),
      constraints: of(constraints),
      indexes: of(indexes),
      triggers: of(triggers),
      policies: of(policies),
      rowSecurity: t.force ? 'forced' : t.rls ? 'enabled' : 'off',
    }
  }
  return snapshot
}

/** Lines that say how `actual` differs from `expected`; empty when they are the same. */
export function diffSnapshots(expected: SchemaSnapshot, actual: SchemaSnapshot): string[] {
  const out: string[] = []
  for (const table of Object.keys(expected)) {
    const e = expected[table]!
    const a = actual[table]
    if (!a) {
      out.push(`table ${table}: missing`)
      continue
    }
    for (const part of ['columns', 'constraints', 'indexes', 'triggers', 'policies'] as const) {
      for (const line of e[part]) if (!a[part].includes(line)) out.push(`table ${table}: ${part} missing  ${line}`)
      for (const line of a[part]) if (!e[part].includes(line)) out.push(`table ${table}: ${part} unexpected  ${line}`)
    }
    // Reported only when nothing else differs in the columns: then the order is the difference.
    const sameColumns = [...e.columns].sort().join('\n') === [...a.columns].sort().join('\n')
    if (sameColumns && e.columns.join('\n') !== a.columns.join('\n')) out.push(`table ${table}: columns in another order`)
    if (e.rowSecurity !== a.rowSecurity) out.push(`table ${table}: row security ${a.rowSecurity}, expected ${e.rowSecurity}`)
  }
  for (const table of Object.keys(actual)) if (!expected[table]) out.push(`table ${table}: unexpected`)
  return out
}
