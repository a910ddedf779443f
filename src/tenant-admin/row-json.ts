import { sql, type Kysely, type RawBuilder } from 'kysely'

/**
 * How a row is written to an export line and read back. In version 1 a row was `to_json(row)`,
 * which writes a json or jsonb column holding JSON `null` and one holding SQL NULL alike (`null`),
 * and import read both back as SQL NULL (an outside review: a NOT NULL jsonb column refused the
 * import; an audit row's metadata broke its hash chain). Version 2 writes such a column as its text,
 * a JSON string (`"null"`, `"{\"a\": 1}"`), so only SQL NULL is `null`; every other column is
 * still written as to_json prints it. Import reads either.
 */
export const EXPORT_VERSION = 2
export const READABLE_VERSIONS: readonly number[] = [1, 2]

export interface ExportColumn {
  name: string
  /** As format_type prints it: a type name the column definition list of json_to_recordset takes. */
  type: string
  /** json, jsonb, or a domain or array of them: written as text from version 2. */
  json: boolean
}

/** The table's columns in their order (dropped ones left out, as to_json leaves them). */
export async function exportColumns(conn: Kysely<any>, table: string): Promise<ExportColumn[]> {
  const { rows } = await sql<ExportColumn>`
    with recursive cols as (
      select a.attnum, a.attname::text as name, pg_catalog.format_type(a.atttypid, a.atttypmod) as type, a.atttypid as t
      from pg_catalog.pg_attribute a
      where a.attrelid = ${`public.${table}`}::regclass and a.attnum > 0 and not a.attisdropped),
    -- Down through domains and arrays to the type underneath, as far as it goes.
    under (attnum, t) as (
      select attnum, t from cols
      union
      select u.attnum, case when y.typbasetype <> 0 then y.typbasetype else y.typelem end
      from under u join pg_catalog.pg_type y on y.oid = u.t
      where y.typbasetype <> 0 or (y.typelem <> 0 and y.typlen = -1))
    select c.name, c.type, exists (select from under u where u.attnum = c.attnum and u.t in ('json'::regtype, 'jsonb'::regtype)) as json
    from cols c order by c.attnum`.execute(conn)
  return rows
}

/** A row of `x` (the table's alias) as one JSON object, the form `version` writes. */
export function rowAsJson(columns: readonly ExportColumn[], version: number): RawBuilder<string> {
  if (version === 1) return sql<string>`pg_catalog.to_json(x)::text`
  // to_json of a row built column by column: the same keys, order and values as to_json(x), but
  // for the JSON columns, which it writes as their text.
  const fields = columns.map((c) => c.json ? sql`x.${sql.id(c.name)}::text as ${sql.id(c.name)}` : sql`x.${sql.id(c.name)} as ${sql.id(c.name)}`)
  return sql<string>`(select pg_catalog.to_json(y)::text from (select ${sql.join(fields)}) y)`
}

/**
 * The rows of `json` (an array of rows, each an object as {@link rowAsJson} wrote it in
 * `version`) as a relation `r` with the table's columns and types: what an insert selects from.
 */
export function rowsFromJson(columns: readonly ExportColumn[], json: string, version: number): RawBuilder<unknown> {
  const text = (c: ExportColumn) => version >= 2 && c.json
  const definitions = columns.map((c) => sql`${sql.id(c.name)} ${sql.raw(text(c) ? 'text' : c.type)}`)
  const values = columns.map((c) => text(c) ? sql`r.${sql.id(c.name)}::${sql.raw(c.type)} as ${sql.id(c.name)}` : sql`r.${sql.id(c.name)}`)
  return sql`(select ${sql.join(values)} from pg_catalog.json_to_recordset(${json}::json) as r(${sql.join(definitions)})) r`
}
