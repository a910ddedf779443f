import { createHash, createHmac } from 'node:crypto'

/**
 * The audit trail's hash chain (migration 0011), computed the way the database's trigger does, so
 * that recordAudit can check what it signs and `skills-db audit verify` can check everything,
 * without trusting any function in the database.
 */

/** One audit row as text, as PostgreSQL's own casts print it (what the chain hashes). */
export interface AuditRowText {
  id: string
  tenantId: string
  seq: string | null
  /** created_at, in microseconds since the epoch */
  createdUs: string
  actorId: string | null
  action: string
  resourceType: string | null
  resourceId: string | null
  ipAddress: string | null
  /** jsonb's text */
  metadata: string | null
}

/** '-' for NULL, else the length in bytes, ':', the text: no two rows read alike. */
export function field(value: string | null): string {
  return value === null ? '-' : `${Buffer.byteLength(value, 'utf8')}:${value}`
}

/** row_hash = sha256(prev_hash || 'skills-db audit v1' and the row's fields). */
export function rowHash(prevHash: Uint8Array, row: AuditRowText): Buffer {
  const text = 'skills-db audit v1' + [row.id, row.tenantId, row.seq, row.createdUs, row.actorId, row.action, row.resourceType, row.resourceId, row.ipAddress, row.metadata].map(field).join('')
  return createHash('sha256').update(prevHash).update(text, 'utf8').digest()
}

/** The hash a tenant's chain starts from: its rows written before the chain, in (created_at, id) order. */
export function chainAnchor(tenantId: string, legacyRows: Iterable<AuditRowText>): Buffer {
  const hash = createHash('sha256').update(`skills-db audit anchor v1${field(tenantId)}`, 'utf8')
  for (const row of legacyRows) {
    hash.update([row.id, row.createdUs, row.actorId, row.action, row.resourceType, row.resourceId, row.ipAddress, row.metadata].map(field).join(''), 'utf8')
  }
  return hash.digest()
}

/** What the app signs of a row it appended: tenant, seq, row_hash and its own clock. */
export function signatureOf(secret: string, tenantId: string, seq: string, rowHashHex: string, signedAt: Date): string {
  return createHmac('sha256', secret).update(`skills-db audit signature v1:${field(tenantId)}:${seq}:${rowHashHex}:${signedAt.toISOString()}`, 'utf8').digest('hex')
}
