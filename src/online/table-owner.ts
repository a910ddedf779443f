import { sql, type Kysely } from 'kysely'

/** Owner of `table`, and whether row security can confine it (it cannot confine a superuser or BYPASSRLS role). */
async function tableOwner(db: Kysely<any>, table: string): Promise<{ name: string; confinable: boolean }> {
  const { rows } = await sql<{ name: string; confinable: boolean }>`
    select r.rolname as name, not (r.rolsuper or r.rolbypassrls) as confinable
    from pg_catalog.pg_class c join pg_catalog.pg_roles r on r.oid = c.relowner
    where c.oid = pg_catalog.to_regclass(${table}::text)`.execute(db)
  if (!rows[0]) throw new Error(`table ${table} does not exist`)
  return rows[0]
}

/** The owner of `table` as a policy's role list: empty when row security cannot confine it anyway. */
export function ownerIfConfinable(table: string): (db: Kysely<any>) => Promise<string[]> {
  return async (db) => {
    const owner = await tableOwner(db, table)
    return owner.confinable ? [owner.name] : []
  }
}
