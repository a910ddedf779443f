import { sql, type Kysely, type Transaction } from 'kysely'
import { signTenantContext, type TenantKey } from './tenant-key.ts'

/**
 * A tenant lifecycle request as the database signs it (0020): 'skills-db tenant lifecycle v1 ', the
 * operation, then each value as skills_db.audit_field writes it ('-' for NULL, else its length in
 * bytes, ':' and the text), so no two requests have the same text. No tenant id `createTenant`
 * accepts has a space, so the text is never also one `enter()` would accept.
 */
export function lifecycleRequest(operation: string, values: readonly (string | null)[]): string {
  return `skills-db tenant lifecycle v1 ${operation}${values.map((v) => (v === null ? '-' : `${Buffer.byteLength(v, 'utf8')}:${v}`)).join('')}`
}

/**
 * Runs `call` in a transaction, given the tenant key's signature of `request` and this
 * transaction's challenge (0008's: backend pid and transaction start), so the signature serves this
 * transaction and no other. Two round trips besides BEGIN and COMMIT: lifecycle calls are rare.
 */
export async function inSignedTransaction<T>(db: Kysely<any>, key: TenantKey, request: string, call: (trx: Transaction<any>, signature: string) => Promise<T>): Promise<T> {
  return db.transaction().execute(async (trx) => {
    const { rows } = await sql<{ challenge: string }>`select tenant_context.challenge() as challenge`.execute(trx)
    // enter()'s signature over "<text>:<challenge>", the text being the request instead of a tenant id.
    const signature = signTenantContext(key, request, rows[0]!.challenge)
    return call(trx, signature)
  })
}
