import { sql, type Kysely, type RawBuilder } from 'kysely'

/**
 * How a row is written to an export line and read back. In version 1 a row was `to_json(row)`,
 * which loses two things (outside reviews):
 * - a json or jsonb column holding JSON `null` and one holding SQL NULL are both `null`, and import
 *   read both back as SQL NULL (a NOT NULL jsonb column refused the import; an audit row's metadata
 *   broke its hash chain);
 * - an array's bounds: `'[0:1]={x,y}'` came back as `{x,y}`, whose first element is `[1]`.
 * Version 2 writes such columns (json, jsonb, arrays, composite types, and domains over them) as
 * their text, a JSON string (`"null"`, `"[0:1]={x,y}"`), which their type reads back exactly; only
 * SQL NULL is `null`. Every other column is written as to_json prints it. Import reads either
 * version. Both fix the settings a type's text depends on ({@link TEXT_SETTINGS}).
 */
export const EXPORT_VERSION = 2
export const READABLE_VERSIONS: readonly number[] = [1, 2]

/**
 * What a value's text depends on, fixed while a file is written and read: two exports of the same
 * rows are the same bytes, and an import reads them as written (an outside review had a date[]
 * written as 01/02/2024 under DateStyle 'SQL, DMY' come back as 2 January under 'ISO, MDY'). to_json
 * itself writes times in ISO whatever DateStyle says; a date inside an array's text does not. With
 * array_nulls off, an array's NULL element read back as the text 'NULL' (another review); a regclass
 * is written and read qualified, whatever search_path the database sets (a third).
 */
export const TEXT_SETTINGS = sql`pg_catalog.set_config('timezone', 'UTC', true), pg_catalog.set_config('datestyle', 'ISO, YMD', true),
  pg_catalog.set_config('intervalstyle', 'postgres', true), pg_catalog.set_config('extra_float_digits', '1', true),
  pg_catalog.set_config('bytea_output', 'hex', true), pg_catalog.set_config('lc_monetary', 'C', true),
  pg_catalog.set_config('array_nulls', 'on', true), pg_catalog.set_config('xmloption', 'content', true),
  pg_catalog.set_config('search_path', 'pg_catalog', true)`


export interface ExportColumn {
  name: string
  /** As format_type prints it: a type name the column definition list of json_to_recordset takes. */
  type: string
  /** json or jsonb (or a domain over them). */
  json: boolean
  /** An array or a composite type (or a domain over one): to_json writes neither whole. */
  array: boolean
  notNull: boolean
  /** An identity column: its values are the file's (OVERRIDING SYSTEM VALUE), its sequence moved past them. */
  identity: boolean
}

/** The table's columns in their order, dropped and generated ones left out. */
export async function exportColumns(conn: Kysely<any>, table: string): Promise<ExportColumn[]> {
  const { rows } = await sql<ExportColumn>`
    with recursive cols as (
      select a.attnum, a.attname::text as name, pg_catalog.format_type(a.atttypid, a.atttypmod) as type, a.atttypid as t, a.attnotnull as "notNull",
        a.attidentity <> '' as identity
      from pg_catalog.pg_attribute a
      -- Not generated columns: the database computes them again (an outside review could not import
      -- a tenant back: "cannot insert a non-DEFAULT value" into one).
      where a.attrelid = ${`public.${table}`}::regclass and a.attnum > 0 and not a.attisdropped and a.attgenerated = ''),
    -- Down through domains to the type underneath.
    base (attnum, t) as (
      select attnum, t from cols
      union
      select b.attnum, y.typbasetype from base b join pg_catalog.pg_type y on y.oid = b.t where y.typbasetype <> 0)
    select c.name, c.type, c."notNull", c.identity,
      exists (select from base b where b.attnum = c.attnum and b.t in ('json'::regtype, 'jsonb'::regtype)) as json,
      exists (select from base b join pg_catalog.pg_type y on y.oid = b.t where b.attnum = c.attnum and (y.typcategory = 'A' or y.typtype = 'c')) as array
    from cols c order by c.attnum`.execute(conn)
  return rows
}

/** Written as its text in `version`. */
const asText = (c: ExportColumn, version: number) => version >= 2 && (c.json || c.array)

/** A row of `x` (the table's alias) as one JSON object, the form `version` writes. */
export function rowAsJson(columns: readonly ExportColumn[], version: number): RawBuilder<string> {
  if (version === 1) return sql<string>`pg_catalog.to_json(x)::text`
  // to_json of a row built column by column: the same keys, order and values as to_json(x), but
  // for the columns written as their text.
  const fields = columns.map((c) => asText(c, version) ? sql`x.${sql.id(c.name)}::text as ${sql.id(c.name)}` : sql`x.${sql.id(c.name)} as ${sql.id(c.name)}`)
  return sql<string>`(select pg_catalog.to_json(y)::text from (select ${sql.join(fields)}) y)`
}

/**
 * The rows of `json` (an array of rows, each an object as {@link rowAsJson} wrote it in
 * `version`) as a relation `r` with the table's columns and types: what an insert selects from.
 * In version 1, `null` in a NOT NULL json column can only have been JSON null, and is read so.
 */
export function rowsFromJson(columns: readonly ExportColumn[], json: string, version: number): RawBuilder<unknown> {
  const definitions = columns.map((c) => sql`${sql.id(c.name)} ${sql.raw(asText(c, version) ? 'text' : c.type)}`)
  const values = columns.map((c) => {
    if (asText(c, version)) return sql`r.${sql.id(c.name)}::${sql.raw(c.type)} as ${sql.id(c.name)}`
    if (version === 1 && c.json && c.notNull) return sql`coalesce(r.${sql.id(c.name)}, 'null'::${sql.raw(c.type)}) as ${sql.id(c.name)}`
    return sql`r.${sql.id(c.name)}`
  })
  return sql`(select ${sql.join(values)} from pg_catalog.json_to_recordset(${json}::json) as r(${sql.join(definitions)})) r`
}

/**
 * The columns an insert of {@link rowsFromJson}'s rows names, in their order, and the values of
 * identity columns taken as they are (an outside review could not import back a tenant of a table
 * an app had given one).
 */
export const columnList = (columns: readonly ExportColumn[]) =>
  sql`(${sql.join(columns.map((c) => sql.id(c.name)))})${columns.some((c) => c.identity) ? sql` overriding system value` : sql``}`

/** Moves each identity column's sequence of `table` past the values now in it, so the next row the app adds does not collide. */
export async function identitiesPastRows(conn: Kysely<any>, table: string, columns: readonly ExportColumn[]): Promise<void> {
  for (const c of columns.filter((c) => c.identity)) {
    await sql`select pg_catalog.setval(s.seq, s.m) from (
        select pg_catalog.pg_get_serial_sequence(${`public.${table}`}, ${c.name}) as seq, (select max(x.${sql.id(c.name)}) from ${sql.table(`public.${table}`)} x) as m) s
      where s.m is not null and s.m > coalesce(pg_catalog.pg_sequence_last_value(s.seq::regclass), 0)`.execute(conn)
  }
}
