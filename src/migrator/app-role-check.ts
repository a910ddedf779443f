import { sql, type Kysely } from 'kysely'

/**
 * How `role` could step past row security, or undefined when it cannot: as a superuser or BYPASSRLS
 * role, as a member (at any depth, with or without INHERIT: SET ROLE suffices) of one, or as the
 * owner of an object of this database (or a member of that owner): an owner can switch row security
 * off, or redefine what the policies call.
 */
export async function escapeRoutes(db: Kysely<any>, role: string): Promise<string | undefined> {
  const { rows } = await sql<{ super: boolean; bypass: boolean; via: string | null; owns: string | null }>`
    select r.rolsuper as super, r.rolbypassrls as bypass,
      (select pg_catalog.string_agg(x.rolname, ', ' order by x.rolname) from pg_catalog.pg_roles x
        where (x.rolsuper or x.rolbypassrls) and x.oid <> r.oid and pg_catalog.pg_has_role(r.oid, x.oid, 'MEMBER')) as via,
      (select pg_catalog.string_agg(pg_catalog.pg_get_userbyid(o.owner), ', ' order by pg_catalog.pg_get_userbyid(o.owner)) from (
          select relowner as owner from pg_catalog.pg_class
          union select proowner from pg_catalog.pg_proc
          union select nspowner from pg_catalog.pg_namespace
          union select typowner from pg_catalog.pg_type
          union select datdba from pg_catalog.pg_database where datname = pg_catalog.current_database()
        ) o where pg_catalog.pg_has_role(r.oid, o.owner, 'MEMBER')) as owns
    from pg_catalog.pg_roles r where r.rolname = ${role}`.execute(db)
  const r = rows[0]
  if (!r) return undefined
  if (r.super) return 'is a superuser'
  if (r.bypass) return 'has BYPASSRLS'
  if (r.via) return `is a member of ${r.via}, which row security does not apply to`
  if (r.owns) return `owns objects in this database${r.owns === role ? '' : ` (through ${r.owns})`}`
  return undefined
}
