import type { Transaction } from 'kysely'
import type { DB } from '../db-types.ts'

export interface AuditEvent {
  actorId: string | null
  action: string
  resourceType?: string
  resourceId?: string
  ipAddress?: string
  metadata?: Record<string, unknown>
}

/**
 * Appends an audit row for the current tenant (the one `withTenant` set) and the given actor,
 * in the caller's transaction: the audit row commits or rolls back with the change it records.
 *
 * @example
 * await withTenant(db, tenantId, async (trx) => {
 *   await trx.updateTable('skills').set({ status: 'archived' }).where('id', '=', id).execute()
 *   await recordAudit(trx, { actorId: userId, action: 'skill.archive', resourceType: 'skill', resourceId: id })
 * })
 */
export async function recordAudit(trx: Transaction<DB>, event: AuditEvent): Promise<string> {
  if (!event.action.trim()) throw new Error('audit action is empty')
  const row = await trx
    .insertInto('audit_logs')
    .values({
      actor_id: event.actorId,
      action: event.action,
      resource_type: event.resourceType ?? null,
      resource_id: event.resourceId ?? null,
      ip_address: event.ipAddress ?? null,
      metadata: event.metadata ? JSON.stringify(event.metadata) : null,
    })
    .returning('id')
    .executeTakeFirstOrThrow()
  return row.id
}
