import { sql, type Kysely } from 'kysely'
import { forget, readRecorded, record } from './recorded-settings.ts'
import type { Step } from './step.ts'

const KEY = 'public_schema_create_revoked'

async function publicMayCreate(db: Kysely<any>): Promise<{ open: boolean; owner: string; me: string }> {
  const { rows } = await sql<{ open: boolean; owner: string; me: string }>`
    select exists (select 1 from pg_catalog.aclexplode(n.nspacl) a where a.grantee = 0 and a.privilege_type = 'CREATE') as open,
      pg_catalog.pg_get_userbyid(n.nspowner) as owner, current_user as me
    from pg_catalog.pg_namespace n where n.nspname = 'public'`.execute(db)
  return rows[0] ?? { open: false, owner: '', me: '' }
}

/**
 * Nobody but its owner creates objects in schema `public`. Clusters first created on PostgreSQL 14
 * or older (and pg_upgraded since) let every role do it, so a role could plant a function or table
 * there that shadows what the migrations or SECURITY DEFINER code call. `down` gives the right
 * back only when this step took it away.
 */
export const revokePublicCreate: Step = {
  name: 'no CREATE on schema public for PUBLIC',
  async up(db) {
    if (!(await publicMayCreate(db)).open) return
    // One transaction: the record of what to give back, the REVOKE, and the proof that it took
    // (a REVOKE by a role that is not the schema's owner only warns) commit or vanish together.
    await db.transaction().execute(async (trx) => {
      await record(trx, KEY, 'yes')
      await sql`revoke create on schema public from public`.execute(trx)
      const after = await publicMayCreate(trx)
      if (after.open) {
        throw new Error(
          `every role may create objects in schema public, and ${after.me} cannot revoke that (the schema belongs to ${after.owner}): ` +
            `as ${after.owner}, run  REVOKE CREATE ON SCHEMA public FROM PUBLIC; GRANT CREATE ON SCHEMA public TO ${after.me};  then run the migration again`,
        )
      }
    })
  },
  async down(db) {
    if ((await readRecorded(db, KEY)) !== 'yes') return
    await db.transaction().execute(async (trx) => {
      await sql`grant create on schema public to public`.execute(trx)
      if (!(await publicMayCreate(trx)).open) throw new Error(`could not give CREATE on schema public back to PUBLIC: run the down as the owner of schema public`)
      await forget(trx, KEY)
    })
  },
}
