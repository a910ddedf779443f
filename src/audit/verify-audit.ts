import { sql, type Kysely } from 'kysely'
import { withMigrationLock } from '../migrator/migration-lock.ts'
import { parseTenantKey, type TenantKey } from '../tenancy/tenant-key.ts'
import { chainAnchor, rowHash, signatureOf, type AuditRowText } from './audit-chain.ts'

/** Where a tenant's chain ends: its last seq and row_hash (hex). */
export interface AuditHead {
  /** The tenant whose chain this is. */
  tenantId: string
  /** The seq of the chain's last row, as decimal text (a bigint). */
  seq: string
  /** That row's row_hash, in hex. */
  rowHash: string
}

/**
 * What an {@link AuditProblem} found: a row `changed` after it was written, rows `deleted` from
 * the chain's middle, a row `out-of-order`, a row `backdated` (dated before the row it follows, or
 * before the app signed it), a row `outside-chain` (written while the chain's trigger was off), a
 * row `unsigned`, with a `bad-signature` or signed with an `unknown-key` (one not passed in
 * `keys`); the chain's end `truncated` or `rewritten` (against its recorded head, or a head of
 * `expectedHeads`); a `schema` change of the audit tables themselves; or a chain that could not be
 * read at all, `unverifiable`.
 */
export type AuditProblemKind =
  | 'changed' | 'deleted' | 'out-of-order' | 'backdated' | 'outside-chain'
  | 'unsigned' | 'bad-signature' | 'unknown-key' | 'truncated' | 'rewritten' | 'schema' | 'unverifiable'

/** One thing that shows the trail was tampered with: the first found per tenant, or a change of the tables themselves. */
export interface AuditProblem {
  /** What was found; see {@link AuditProblemKind}. */
  kind: AuditProblemKind
  /** The tenant whose chain it is in; absent for a problem of the tables (`schema`). */
  tenantId?: string
  /** The seq of the row it concerns, as decimal text, when there is one. */
  seq?: string
  /** The id of the row it concerns, when there is one. */
  rowId?: string
  /** One line for a person: which tenant, which row, what is wrong with it. */
  message: string
}

/** What {@link verifyAuditTrail} found: each tenant's chain, and the problems (none when the trail is intact). */
export interface AuditReport {
  /** Each tenant verified, in id order. */
  tenants: {
    /** The tenant's id. */
    tenantId: string
    /** The chain's rows verified before the first problem (all of them when there is none). */
    rows: number
    /** Rows from before the chain began (no seq): not chained one by one, but hashed into the chain's anchor. */
    legacyRows: number
    /** Where the chain ends, to pass as `expectedHeads` next time; null when it has no rows, or when one of its rows showed a problem. */
    head: AuditHead | null
  }[]
  /** The tables' problems, then the first of each tenant's chain, then each expected head no longer in its chain; empty when the trail verifies. */
  problems: AuditProblem[]
}

/** What {@link verifyAuditTrail} checks with, and how much. */
export interface VerifyAuditOptions {
  /** The audit keys the app signs (or signed) with, `<id>:<secret>`: the current one, and older ones still in the trail. */
  keys: string[]
  /** Only this tenant's chain (the tables are checked anyway). */
  tenantId?: string
  /** Heads an earlier verification printed: each must still be in its chain, or rows were changed or removed since. */
  expectedHeads?: AuditHead[]
  /** How far a row's created_at may be from the app's clock when it signed (default 5 minutes). */
  clockToleranceMs?: number
}

const BATCH = 5000

/**
 * Recomputes every tenant's audit chain from the rows (nothing computed by the database is
 * trusted but PostgreSQL's own casts) and checks the app's signatures, the chain heads and the
 * tables' definitions; reports the first row that was changed, removed, inserted out of order or
 * backdated in each tenant's chain. Reads as the owner (it holds the migration lock, so it sees
 * every tenant) or a superuser.
 *
 * @example
 * const report = await verifyAuditTrail(db, { keys: process.env.SKILLS_DB_AUDIT_KEYS!.split(',') })
 * if (report.problems.length > 0) console.error(report.problems[0]!.message)
 */
export async function verifyAuditTrail(db: Kysely<any>, options: VerifyAuditOptions): Promise<AuditReport> {
  const keys = new Map<string, TenantKey>(options.keys.map((k) => parseTenantKey(k.trim(), 'audit key')).map((k) => [k.id, k]))
  if (keys.size === 0) throw new Error('audit verify needs the audit key(s) the app signs with: SKILLS_DB_AUDIT_KEYS=<id>:<secret>[,…]')
  return db.connection().execute((conn) => withMigrationLock(conn, async () => {
    if (options.tenantId !== undefined) {
      // A mistyped id would otherwise verify nothing and pass.
      const { rows: known } = await sql`select 1 from public.tenants where id = ${options.tenantId}`.execute(conn)
      if (known.length === 0) throw new Error(`no tenant has the id "${options.tenantId}": pass a tenant's id (select id, slug from tenants), or leave --tenant out to verify every tenant`)
    }
    const problems = await schemaProblems(conn)
    const tenants: AuditReport['tenants'] = []
    const { rows } = await sql<{ tenant_id: string }>`
      select tenant_id from (select distinct tenant_id from public.audit_logs
        union select tenant_id from skills_db.audit_chain_heads) t
      where ${options.tenantId === undefined ? sql`true` : sql`tenant_id = ${options.tenantId}`} order by 1`.execute(conn)
    for (const { tenant_id: tenantId } of rows) {
      // One tenant's chain that cannot even be read (what SQL of the app role wrote into its own
      // tenant's rows, say) is that tenant's problem: every other tenant is still verified.
      const chain = await verifyChain(conn, tenantId, keys, options.clockToleranceMs ?? 5 * 60_000).catch((error: unknown): ChainResult => {
        if ((error as { code?: string }).code !== undefined) throw error // the server's: the run cannot go on
        return { rows: 0, legacyRows: 0, head: null, problem: { kind: 'unverifiable', message: `tenant ${tenantId}: its chain could not be verified: ${(error as Error).message}` } }
      })
      tenants.push({ tenantId, rows: chain.rows, legacyRows: chain.legacyRows, head: chain.head })
      if (chain.problem) problems.push({ tenantId, ...chain.problem })
    }
    for (const expected of options.expectedHeads ?? []) {
      if (options.tenantId !== undefined && expected.tenantId !== options.tenantId) continue
      const { rows: at } = await sql<{ hash: string }>`
        select encode(row_hash, 'hex') as hash from public.audit_logs where tenant_id = ${expected.tenantId} and seq = ${expected.seq}::bigint`.execute(conn)
      if (at[0]?.hash !== expected.rowHash) {
        problems.push({
          kind: at[0] ? 'rewritten' : 'truncated', tenantId: expected.tenantId, seq: expected.seq,
          message: `tenant ${expected.tenantId}: the chain no longer holds seq ${expected.seq} with the hash an earlier verification saw: ${at[0] ? 'rows up to it were rewritten' : 'rows up to it were removed'} since`,
        })
      }
    }
    return { tenants, problems }
  }))
}

interface ChainResult {
  rows: number
  legacyRows: number
  head: AuditHead | null
  problem?: Omit<AuditProblem, 'tenantId'>
}

const rowText = (r: Record<string, string | null>): AuditRowText => ({
  id: r.id!, tenantId: r.tenant_id!, seq: r.seq ?? null, createdUs: r.created_us!, actorId: r.actor_id ?? null, action: r.action!,
  resourceType: r.resource_type ?? null, resourceId: r.resource_id ?? null, ipAddress: r.ip_address ?? null, metadata: r.metadata ?? null,
})

const COLUMNS = sql`a.id::text as id, a.tenant_id, a.seq::text as seq, ((extract(epoch from a.created_at) * 1000000)::bigint)::text as created_us,
  a.actor_id, a.action, a.resource_type, a.resource_id, a.ip_address, a.metadata::text as metadata,
  encode(a.prev_hash, 'hex') as prev_hash, encode(a.row_hash, 'hex') as row_hash`

async function verifyChain(conn: Kysely<any>, tenantId: string, keys: Map<string, TenantKey>, toleranceMs: number): Promise<ChainResult> {
  const legacy = await legacyRowsOf(conn, tenantId)
  const anchor = chainAnchor(tenantId, legacy)
  let previous = { hash: anchor, seq: 0n, createdUs: -1n, rowId: undefined as string | undefined }
  let count = 0
  const firstChainedUs = async () => (await sql<{ us: string | null }>`
    select ((extract(epoch from min(created_at)) * 1000000)::bigint)::text as us from public.audit_logs where tenant_id = ${tenantId} and seq is not null`.execute(conn)).rows[0]?.us
  for (;;) {
    const { rows } = await sql<Record<string, string | null>>`
      select ${COLUMNS}, s.key_id, s.signature, s.signed_at
      from public.audit_logs a left join public.audit_signatures s on s.tenant_id = a.tenant_id and s.seq = a.seq
      where a.tenant_id = ${tenantId} and a.seq > ${String(previous.seq)}::bigint order by a.seq limit ${BATCH}`.execute(conn)
    for (const r of rows) {
      const row = rowText(r)
      const seq = BigInt(row.seq!)
      const at = { seq: row.seq!, rowId: row.id }
      const result = (problem: Omit<AuditProblem, 'tenantId' | 'seq' | 'rowId'>): ChainResult => ({ rows: count, legacyRows: legacy.length, head: null, problem: { ...at, ...problem } })
      if (seq !== previous.seq + 1n) {
        return result({ kind: 'deleted', message: `tenant ${tenantId}: rows ${previous.seq + 1n}${seq - 1n > previous.seq + 1n ? `–${seq - 1n}` : ''} of the chain are missing before row ${row.id} (seq ${seq}): removed` })
      }
      if (r.prev_hash !== previous.hash.toString('hex')) {
        const what = seq === 1n ? 'the anchor of the rows written before the chain (one of those was changed, removed or added)' : `row seq ${previous.seq}`
        if (seq === 1n && legacy.length > 0) {
          const after = await firstChainedUs()
          const late = after ? legacy.find((l) => BigInt(l.createdUs) > BigInt(after)) : undefined
          if (late) return result({ kind: 'outside-chain', message: `tenant ${tenantId}: row ${late.id} has no place in the chain but was written after it began (written while its trigger was off?)` })
        }
        return result({ kind: 'out-of-order', message: `tenant ${tenantId}: row ${row.id} (seq ${seq}) does not follow ${what}: inserted out of order, or what it follows was changed` })
      }
      const hash = rowHash(Buffer.from(r.prev_hash!, 'hex'), row)
      if (hash.toString('hex') !== r.row_hash) {
        return result({ kind: 'changed', message: `tenant ${tenantId}: row ${row.id} (seq ${seq}) was changed after it was written (its content no longer hashes to its row_hash)` })
      }
      const createdUs = BigInt(row.createdUs)
      if (createdUs < previous.createdUs) {
        return result({ kind: 'backdated', message: `tenant ${tenantId}: row ${row.id} (seq ${seq}) is dated before the row it follows: backdated` })
      }
      if (r.signature === null) {
        return result({ kind: 'unsigned', message: `tenant ${tenantId}: row ${row.id} (seq ${seq}) is not signed: written outside recordAudit, or its signature was removed` })
      }
      const key = keys.get(r.key_id!)
      if (!key) return result({ kind: 'unknown-key', message: `tenant ${tenantId}: row ${row.id} (seq ${seq}) is signed with audit key "${r.key_id}", which was not given to the verification` })
      const signedAt = new Date(r.signed_at as unknown as Date)
      // recordAudit signs with the app's clock: 'infinity' or a time JavaScript cannot hold is no such time.
      if (Number.isNaN(signedAt.getTime())) {
        return result({ kind: 'bad-signature', message: `tenant ${tenantId}: row ${row.id} (seq ${seq}): its signature is dated ${String(r.signed_at)}, which no app clock gives: forged` })
      }
      if (signatureOf(key.secret, tenantId, row.seq!, hash.toString('hex'), signedAt) !== r.signature) {
        return result({ kind: 'bad-signature', message: `tenant ${tenantId}: row ${row.id} (seq ${seq}): its signature does not match: the row, or its signature, was changed` })
      }
      if (Number(createdUs / 1000n) < signedAt.getTime() - toleranceMs) {
        return result({ kind: 'backdated', message: `tenant ${tenantId}: row ${row.id} (seq ${seq}) is dated ${new Date(Number(createdUs / 1000n)).toISOString()}, the app signed it at ${signedAt.toISOString()}: backdated` })
      }
      previous = { hash, seq, createdUs, rowId: row.id }
      count++
    }
    if (rows.length < BATCH) break
  }
  const head: AuditHead | null = count > 0 ? { tenantId, seq: String(previous.seq), rowHash: previous.hash.toString('hex') } : null
  const { rows: stored } = await sql<{ seq: string; hash: string }>`
    select seq::text as seq, encode(row_hash, 'hex') as hash from skills_db.audit_chain_heads where tenant_id = ${tenantId}`.execute(conn)
  const recorded = stored[0]
  if (recorded && (recorded.seq !== String(previous.seq) || recorded.hash !== previous.hash.toString('hex'))) {
    const removed = BigInt(recorded.seq) > previous.seq
    return {
      rows: count, legacyRows: legacy.length, head,
      problem: {
        kind: removed ? 'truncated' : 'rewritten', seq: recorded.seq,
        message: removed
          ? `tenant ${tenantId}: the chain's head is at seq ${recorded.seq}, its last row at seq ${previous.seq}: the rows after it were removed`
          : `tenant ${tenantId}: the chain's head (seq ${recorded.seq}) is not its last row: the chain or its head was rewritten`,
      },
    }
  }
  if (!recorded && count === 0 && legacy.length > 0) {
    return { rows: 0, legacyRows: legacy.length, head, problem: { kind: 'outside-chain', rowId: legacy.at(-1)!.id, message: `tenant ${tenantId}: ${legacy.length} audit row(s) and no chain: written while the chain's trigger was off?` } }
  }
  return { rows: count, legacyRows: legacy.length, head }
}

/** The tenant's rows from before the chain (no seq), in the anchor's order, in batches. */
async function legacyRowsOf(conn: Kysely<any>, tenantId: string): Promise<AuditRowText[]> {
  const out: AuditRowText[] = []
  let after: { created: string; id: string } | undefined
  for (;;) {
    const { rows } = await sql<Record<string, string | null>>`
      select ${COLUMNS}, a.created_at::text as created_key from public.audit_logs a
      where a.tenant_id = ${tenantId} and a.seq is null
        ${after ? sql`and (a.created_at, a.id) > (${after.created}::timestamptz, ${after.id}::uuid)` : sql``}
      order by a.created_at, a.id limit ${BATCH}`.execute(conn)
    for (const r of rows) out.push(rowText(r))
    if (rows.length < BATCH) return out
    after = { created: rows.at(-1)!.created_key!, id: rows.at(-1)!.id! }
  }
}

/** What the audit tables must still be: their triggers firing always, no rule, no other policy, crash-safe. */
async function schemaProblems(conn: Kysely<any>): Promise<AuditProblem[]> {
  const problems: AuditProblem[] = []
  const expected: Record<string, string[]> = {
    audit_logs: ['actor_of_own_tenant', 'no_truncate', 'no_update_or_delete', 'stamp'],
    audit_signatures: ['no_truncate', 'no_update_or_delete'],
  }
  for (const [table, triggers] of Object.entries(expected)) {
    const { rows } = await sql<{ persistence: string; rls: boolean; forced: boolean; rules: string[]; triggers: string[]; policies: string[] }>`
      select c.relpersistence::text as persistence, c.relrowsecurity as rls, c.relforcerowsecurity as forced,
        array(select r.rulename::text from pg_catalog.pg_rewrite r where r.ev_class = c.oid order by 1) as rules,
        array(select t.tgname::text || ':' || t.tgenabled::text from pg_catalog.pg_trigger t where t.tgrelid = c.oid and not t.tgisinternal order by 1) as triggers,
        array(select p.polname::text || ':' || case when p.polpermissive then 'permissive' else 'restrictive' end from pg_catalog.pg_policy p where p.polrelid = c.oid order by 1) as policies
      from pg_catalog.pg_class c where c.oid = pg_catalog.to_regclass(${`public.${table}`}::text)`.execute(conn)
    const t = rows[0]
    const problem = (message: string) => problems.push({ kind: 'schema', message: `${table}: ${message}` })
    if (!t) { problem('the table is gone'); continue }
    if (t.persistence !== 'p') problem('it is UNLOGGED (or temporary): a crash empties it')
    if (t.rules.length > 0) problem(`rules ${t.rules.join(', ')} rewrite what is written to it`)
    if (!t.rls || !t.forced) problem('row security is off, or not forced')
    const wanted = triggers.map((name) => `${name}:A`)
    const extra = t.triggers.filter((x) => !wanted.includes(x))
    const missing = wanted.filter((x) => !t.triggers.includes(x))
    if (extra.length > 0 || missing.length > 0) problem(`its triggers are not skills-db's, each firing always: ${[...extra.map((x) => `unexpected ${x}`), ...missing.map((x) => `missing ${x}`)].join(', ')}`)
    const foreign = t.policies.filter((p) => !['tenant_isolation:permissive', 'owner_all_tenants:permissive'].includes(p))
    if (foreign.length > 0) problem(`policies that are not skills-db's: ${foreign.join(', ')}`)
  }
  return problems
}
