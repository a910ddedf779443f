import { sql, type Kysely } from 'kysely'

/** Small catalog questions the building blocks ask before acting, so every step can be re-run. */

export async function columnInfo(db: Kysely<any>, table: string, column: string) {
  const { rows } = await sql<{ notnull: boolean }>`
    select a.attnotnull as notnull from pg_attribute a
    where a.attrelid = pg_catalog.to_regclass(${table}::text) and a.attname = ${column} and not a.attisdropped`.execute(db)
  return rows[0]
}

export async function constraintInfo(db: Kysely<any>, table: string, name: string) {
  const { rows } = await sql<{ validated: boolean; columns: string[]; type: string }>`
    select c.convalidated as validated, c.contype::text as type,
      array(select a.attname::text from unnest(c.conkey) with ordinality k(n, i)
            join pg_attribute a on a.attrelid = c.conrelid and a.attnum = k.n order by k.i) as columns
    from pg_constraint c where c.conrelid = pg_catalog.to_regclass(${table}::text) and c.conname = ${name}`.execute(db)
  return rows[0]
}

export async function indexInfo(db: Kysely<any>, name: string) {
  const { rows } = await sql<{ valid: boolean; constraint: string | null; table: string; empty: boolean }>`
    select i.indisvalid as valid,
      (select conname from pg_constraint where conindid = i.indexrelid limit 1) as constraint,
      i.indrelid::regclass::text as table,
      coalesce(pg_catalog.pg_get_expr(i.indpred, i.indrelid) = 'false', false) as empty
    from pg_index i where i.indexrelid = pg_catalog.to_regclass(${name}::text)`.execute(db)
  return rows[0]
}

/** Identifiers the building blocks splice into DDL: checked, so a typo fails loudly, not oddly. */
export function ident(name: string): string {
  if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) throw new Error(`"${name}" is not a plain lower-case SQL identifier`)
  return name
}

export const columnList = (columns: readonly string[]) => sql.raw(columns.map(ident).join(', '))

/** An index's column: a plain identifier, optionally followed by ` desc`. */
export function indexColumn(column: string): string {
  const [name, order, extra] = column.split(' ')
  if (extra !== undefined || (order !== undefined && order !== 'desc')) throw new Error(`"${column}" is not a column, or a column and desc`)
  return order ? `${ident(name!)} desc` : ident(name!)
}
