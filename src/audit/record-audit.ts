import { isDeepStrictEqual } from 'node:util'
import { sql, type Transaction } from 'kysely'
import { auditKeyOf } from '../connection/create-db.ts'
import type { DB } from '../db-types.ts'
import { parseTenantKey, type TenantKey } from '../tenancy/tenant-key.ts'
import { withTenantDb } from '../tenancy/with-tenant.ts'
import { rowHash, signatureOf, type AuditRowText } from './audit-chain.ts'

/** What {@link recordAudit} writes: who did what to which resource. The tenant is the transaction's. */
export interface AuditEvent {
  /** The user who acted (users.id), or null for the system (a job, a webhook). */
  actorId: string | null
  /** What was done, e.g. `'skill.archive'`; not empty. */
  action: string
  /** The kind of thing acted on, e.g. `'skill'`. */
  resourceType?: string
  /** The id of the thing acted on. */
  resourceId?: string
  /** The client's IP address, stored as the text given (the column is text, not inet). */
  ipAddress?: string
  /** Anything else worth keeping: stored as jsonb, and covered by the row's hash like every other field. */
  metadata?: Record<string, unknown>
}

/** An audit row could not be written as asked, or the database answered with something else than what was written. */
export class AuditError extends Error {
  /** Always `'AuditError'`, so a log line or a check of `error.name` tells it apart. */
  override name = 'AuditError'
}

/**
 * Appends an audit row for the current tenant (the one `withTenant` set) and the given actor, in
 * the caller's transaction: the audit row commits or rolls back with the change it records.
 *
 * The database links the row into the tenant's hash chain (seq, prev_hash, row_hash). recordAudit
 * checks that the row it gets back is the one it wrote, computes its hash itself, and signs
 * (tenant, seq, row_hash, its own clock) with the audit key, which the database never sees, into
 * audit_signatures: `skills-db audit verify` then detects any later change, deletion, insertion or
 * backdating, by the owner or a superuser included. The key: createDb(url, { auditKey }), else
 * SKILLS_DB_AUDIT_KEY (`<id>:<secret>`, a secret of 32 characters or more).
 *
 * Appends of one tenant take turns (each holds the tenant's chain head until its transaction ends);
 * other tenants never wait. Two round trips.
 *
 * @example
 * await withTenant(db, tenantId, async (trx) => {
 *   await trx.updateTable('skills').set({ status: 'archived' }).where('id', '=', skillId).execute()
 *   await recordAudit(trx, { actorId: userId, action: 'skill.archive', resourceType: 'skill', resourceId: skillId })
 * })
 */
export async function recordAudit(trx: Transaction<DB>, event: AuditEvent): Promise<string> {
  if (!event.action.trim()) throw new AuditError('audit action is empty')
  const key = auditKey()
  const sent = {
    actor_id: event.actorId,
    action: event.action,
    resource_type: event.resourceType ?? null,
    resource_id: event.resourceId ?? null,
    ip_address: event.ipAddress ?? null,
    metadata: event.metadata ? JSON.stringify(event.metadata) : null,
  }
  const row = await trx
    .insertInto('audit_logs')
    .values(sent)
    .returning(['id', 'tenant_id', 'actor_id', 'action', 'resource_type', 'resource_id', 'ip_address', 'prev_hash', 'row_hash'])
    .returning([
      sql<string | null>`seq::text`.as('seq_text'),
      // The same µs as extract(epoch from created_at), from an interval: Citus takes only IMMUTABLE
      // expressions in RETURNING, and timestamptz - timestamptz is one where date_part is not.
      sql<string>`((extract(epoch from (created_at - '1970-01-01 00:00:00+00'::timestamptz)) * 1000000)::bigint)::text`.as('created_us'),
      sql<string | null>`metadata::text`.as('metadata_text'),
    ])
    .executeTakeFirst()
  if (!row) throw new AuditError('the audit row was not written (a rule or trigger on audit_logs discarded it): the audit trail has been tampered with')
  if (row.seq_text === null || !row.prev_hash || !row.row_hash) {
    throw new AuditError('the audit row was not linked into its tenant\'s hash chain: record audit events inside withTenant, with migration 0011 applied')
  }
  const asWritten = row.actor_id === sent.actor_id && row.action === sent.action && row.resource_type === sent.resource_type &&
    row.resource_id === sent.resource_id && row.ip_address === sent.ip_address &&
    isDeepStrictEqual(row.metadata_text === null ? null : JSON.parse(row.metadata_text), sent.metadata === null ? null : JSON.parse(sent.metadata))
  const text: AuditRowText = {
    id: row.id, tenantId: row.tenant_id, seq: row.seq_text, createdUs: row.created_us, actorId: row.actor_id, action: row.action,
    resourceType: row.resource_type, resourceId: row.resource_id, ipAddress: row.ip_address, metadata: row.metadata_text,
  }
  const hash = rowHash(row.prev_hash, text)
  if (!asWritten || !hash.equals(row.row_hash)) {
    throw new AuditError('the database stored another audit row than the one written, or hashed it otherwise: the audit trigger has been tampered with; nothing was signed')
  }
  const signedAt = new Date()
  await trx.insertInto('audit_signatures').values({
    tenant_id: row.tenant_id,
    seq: row.seq_text,
    key_id: key.id,
    signature: signatureOf(key.secret, row.tenant_id, row.seq_text, hash.toString('hex'), signedAt),
    signed_at: signedAt,
  }).execute()
  return row.id
}

const parsed = new Map<string, TenantKey>()

/** The audit key: createDb's auditKey of the withTenant under way, else SKILLS_DB_AUDIT_KEY; parsed once. */
function auditKey(): TenantKey {
  const db = withTenantDb()
  const [text, what] = db && auditKeyOf(db) !== undefined
    ? [auditKeyOf(db)!, 'createDb option auditKey']
    : [process.env.SKILLS_DB_AUDIT_KEY, 'SKILLS_DB_AUDIT_KEY']
  if (!text) {
    throw new AuditError('recordAudit has no audit key: pass createDb(url, { auditKey }) or set SKILLS_DB_AUDIT_KEY to <id>:<secret> (e.g. a1:$(openssl rand -base64 32)); keep it out of the database, and give the same key to skills-db audit verify')
  }
  let key = parsed.get(text)
  if (!key) {
    try {
      key = parseTenantKey(text, what)
    } catch (error) {
      throw new AuditError((error as Error).message)
    }
    parsed.set(text, key)
  }
  return key
}
