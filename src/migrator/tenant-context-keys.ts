import { sql, type Kysely } from 'kysely'
import { createHash } from 'node:crypto'
import { parseTenantKeys, type TenantKey } from '../tenancy/tenant-key.ts'
import { progress } from '../online/run-context.ts'

const TABLE = 'skills_db.tenant_context_keys'

/** The keys given to the migrator (`tenantKeys`, CLI: SKILLS_DB_TENANT_KEYS), checked before anything runs. */
export function tenantKeysOption(keys: readonly string[] | undefined): TenantKey[] | undefined {
  if (keys === undefined) return undefined
  return parseTenantKeys(keys.join(','), 'tenantKeys (SKILLS_DB_TENANT_KEYS)')
}

/**
 * Makes the database's copy of the tenant keys exactly `keys` (one, or two while rotating), in one
 * transaction, so withTenant never meets a half-written set. Only the pads are stored, out of the
 * application role's reach (0008). Before 0008 there is nowhere to put them: says so.
 */
export async function storeTenantKeys(db: Kysely<any>, keys: readonly TenantKey[]): Promise<void> {
  if (!(await keyTableExists(db))) {
    progress('tenant keys not stored: migration 0008_session_bound_tenant_context is not applied yet')
    return
  }
  const wanted = keys.map((k) => ({ id: k.id, ...hmacPads(k) }))
  await db.transaction().execute(async (trx) => {
    const { rows } = await sql<{ key_id: string; inner_pad: Buffer; outer_pad: Buffer }>`
      select key_id, inner_pad, outer_pad from ${sql.table(TABLE)} order by key_id for update`.execute(trx)
    const same = rows.length === wanted.length && wanted.every((w) => rows.some((r) => r.key_id === w.id && r.inner_pad.equals(w.inner) && r.outer_pad.equals(w.outer)))
    if (same) return
    await sql`delete from ${sql.table(TABLE)}`.execute(trx)
    for (const w of wanted) {
      await sql`insert into ${sql.table(TABLE)} (key_id, inner_pad, outer_pad) values (${w.id}, ${w.inner}, ${w.outer})`.execute(trx)
    }
    progress(`tenant keys stored: ${wanted.map((w) => w.id).join(', ')}`)
  })
  // Distributed on Citus: every node checks the context with a copy of its own (src/citus/worker-tenant-context.ts).
  const { rows } = await sql<{ f: string | null }>`select pg_catalog.to_regprocedure('tenant_context.copy_keys_to_nodes()')::text as f`.execute(db)
  if (rows[0]?.f) await sql`select tenant_context.copy_keys_to_nodes()`.execute(db)
}

/** The ids of the keys the database holds (never the keys), or undefined before 0008. */
export async function storedTenantKeyIds(db: Kysely<any>): Promise<string[] | undefined> {
  if (!(await keyTableExists(db))) return undefined
  const { rows } = await sql<{ key_id: string }>`select key_id from ${sql.table(TABLE)} order by key_id`.execute(db)
  return rows.map((r) => r.key_id)
}

async function keyTableExists(db: Kysely<any>): Promise<boolean> {
  const { rows } = await sql<{ t: string | null }>`select pg_catalog.to_regclass(${TABLE}::text)::text as t`.execute(db)
  return Boolean(rows[0]?.t)
}

/**
 * The key as the database stores it: HMAC's inner and outer pads (RFC 2104), so that the database
 * computes the same HMAC as Node's createHmac with two calls of its built-in sha256().
 */
export function hmacPads(key: TenantKey): { inner: Buffer; outer: Buffer } {
  let bytes = Buffer.from(key.secret, 'utf8')
  if (bytes.length > 64) bytes = createHash('sha256').update(bytes).digest()
  const block = Buffer.alloc(64)
  bytes.copy(block)
  return { inner: Buffer.from(block.map((b) => b ^ 0x36)), outer: Buffer.from(block.map((b) => b ^ 0x5c)) }
}
