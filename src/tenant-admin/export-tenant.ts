import { createHash } from 'node:crypto'
import { once } from 'node:events'
import type { Writable } from 'node:stream'
import { sql, type Kysely } from 'kysely'
import { asOperator, beingDeleted, readLocked, TenantAdminError, tenantRow } from './operator-session.ts'
import { MAX_LINE_BYTES } from './ndjson-lines.ts'
import { EXPORT_VERSION, exportColumns, rowAsJson, TEXT_SETTINGS } from './row-json.ts'
import { exportOrder, TENANT_TABLES } from './tenant-tables.ts'

/** The first line of an export: what it is, of which schema, of which tenant. */
export interface ExportHeader {
  format: 'skills-db tenant export'
  /** 2 from this release (row-json.ts says what changed); import reads 1 and 2. */
  version: number
  /** The migrations applied to the database it was read from, sorted: an import needs the same. */
  migrations: string[]
  tenant: string
}

/**
 * The last line: per table (tenants first), its rows and the SHA-256 of their lines; the SHA-256 of
 * the file before it; the audit chain's head; and `mac`, the tenant key's HMAC of those ({@link exportMacText}),
 * so that a file edited at rest, its checksums refitted, is refused by any database holding that key.
 */
export interface ExportManifest {
  tables: Record<string, { rows: number; sha256: string }>
  rows: number
  sha256: string
  auditHead: { seq: string; hash: string } | null
  /** `<tenant key id>:<HMAC-SHA256, hex>` */
  mac: string
}

/** What the manifest's MAC is of ("v1" names this text's layout, which every version of the file keeps). */
export function exportMacText(tenant: string, m: Pick<ExportManifest, 'sha256' | 'auditHead'>): string {
  return `skills-db tenant export v1:${tenant}:${m.sha256}:${m.auditHead ? `${m.auditHead.seq}:${m.auditHead.hash}` : '-'}`
}

/**
 * The HMAC of `text` under the tenant key `keyId` (the newest one the database holds, when not
 * named), computed by the database from its copy of the key's pads (as enter() checks a
 * signature): the operator needs no secret of its own. Undefined when it holds no such key.
 */
export async function tenantKeyMac(conn: Kysely<any>, text: string, keyId?: string): Promise<string | undefined> {
  const { rows } = await sql<{ mac: string }>`
    select k.key_id || ':' || encode(sha256(k.outer_pad || sha256(k.inner_pad || convert_to(${text}::text, 'UTF8'))), 'hex') as mac
    from skills_db.tenant_context_keys k where ${keyId === undefined ? sql`true` : sql`k.key_id = ${keyId}`}
    order by k.added_at desc, k.key_id limit 1`.execute(conn)
  return rows[0]?.mac
}

export interface ExportProgress {
  table: string
  rows: number
}

const FETCH = 1000

/**
 * Writes every row of one tenant, in every tenant table, its audit trail included, to `out` as
 * NDJSON: a header line ({@link ExportHeader}), one line per row (`{"t":"<table>","r":<the row as
 * PostgreSQL's to_json writes it, but json, jsonb, array and composite columns as their text, a
 * JSON string (row-json.ts)>}`, tenants first, then parents before children, each table in a
 * fixed order), and a manifest line ({@link ExportManifest}) with counts and checksums, sealed
 * with the tenant key. A file without its manifest is truncated, and import says so. Reads one snapshot (REPEATABLE READ, READ
 * ONLY), a thousand rows at a time through a cursor, so memory stays flat; waits for `out` when it
 * is slower. The same rows always give the same bytes. Holds the migration lock while it reads.
 *
 * @example
 * const manifest = await exportTenant(db, tenantId, createWriteStream('acme.ndjson'))
 */
export async function exportTenant(db: Kysely<any>, tenantId: string, out: Writable, onProgress?: (p: ExportProgress) => void): Promise<ExportManifest> {
  return asOperator(db, async (conn, migrations) => {
    await sql`begin isolation level repeatable read read only`.execute(conn)
    try {
      // What to_json and a type's text write depend on these; fixed, so two exports of the same rows
      // are the same bytes. to_json, not to_jsonb: json keeps each value as its type prints it, and
      // jsonb's numbers turn a float's -0 into 0 (a round trip changed an embedding so).
      await sql`select ${TEXT_SETTINGS}`.execute(conn)
      await readLocked(conn, ['public.tenants', ...TENANT_TABLES.map((t) => `public.${t.table}`), 'skills_db.audit_chain_heads', 'skills_db.tenant_context_keys', 'skills_db.tenant_removals'])
      await tenantRow(conn, tenantId)
      // Some of its rows are gone: the file would be sealed, importable, and partial (an outside review imported one, then reactivated it).
      if (await beingDeleted(conn, tenantId)) {
        throw new TenantAdminError(`tenant "${tenantId}" is being deleted (a delete stopped before it finished, and some of its rows are gone): an export now would be partial; finish it with skills-db tenant delete ${tenantId} --yes, and import an export made before the delete`)
      }
      const file = createHash('sha256')
      const write = async (line: string, hashed = true) => {
        if (hashed) file.update(line)
        if (out.errored) throw new TenantAdminError(`cannot write the export: ${out.errored.message}`)
        if (!out.write(line)) await once(out, 'drain').catch((error: Error) => { throw new TenantAdminError(`cannot write the export: ${error.message}`) })
      }
      const header: ExportHeader = { format: 'skills-db tenant export', version: EXPORT_VERSION, migrations, tenant: tenantId }
      await write(`${JSON.stringify(header)}\n`)
      const tables: ExportManifest['tables'] = {}
      for (const table of ['tenants', ...TENANT_TABLES.map((t) => t.table)]) {
        const hash = createHash('sha256')
        let rows = 0
        const column = table === 'tenants' ? sql`x.id` : sql`x.tenant_id`
        await sql`declare tenant_rows no scroll cursor for
          select ${rowAsJson(await exportColumns(conn, table), EXPORT_VERSION)} as j from ${sql.table(`public.${table}`)} x
          where ${column} = ${tenantId}::text order by ${sql.raw(table === 'tenants' ? 'x.id' : exportOrder(table as never))}`.execute(conn)
        for (;;) {
          const { rows: batch } = await sql<{ j: string }>`fetch ${sql.raw(String(FETCH))} from tenant_rows`.execute(conn)
          for (const { j } of batch) {
            const line = `{"t":${JSON.stringify(table)},"r":${j}}\n`
            // Import reads no longer line (ndjson-lines.ts): a file it would refuse is not written.
            if (Buffer.byteLength(line) > MAX_LINE_BYTES) {
              throw new TenantAdminError(`a row of ${table} is ${Math.ceil(Buffer.byteLength(line) / 1048576)} MB as JSON, over the ${MAX_LINE_BYTES / 1048576} MB a line of an export may hold (import could not read it back): nothing was exported`)
            }
            hash.update(line)
            await write(line)
          }
          rows += batch.length
          if (batch.length > 0) onProgress?.({ table, rows })
          if (batch.length < FETCH) break
        }
        await sql`close tenant_rows`.execute(conn)
        tables[table] = { rows, sha256: hash.digest('hex') }
      }
      const { rows: head } = await sql<{ seq: string; hash: string }>`
        select seq::text as seq, encode(row_hash, 'hex') as hash from skills_db.audit_chain_heads where tenant_id = ${tenantId}`.execute(conn)
      const sealed = { sha256: file.digest('hex'), auditHead: head[0] ?? null }
      const mac = await tenantKeyMac(conn, exportMacText(tenantId, sealed))
      if (!mac) throw new TenantAdminError('the database holds no tenant key to seal the export with: run the migrator with SKILLS_DB_TENANT_KEYS')
      const manifest: ExportManifest = { tables, rows: Object.values(tables).reduce((n, t) => n + t.rows, 0), ...sealed, mac }
      await write(`${JSON.stringify({ manifest })}\n`, false)
      return manifest
    } finally {
      await sql`rollback`.execute(conn).catch(() => {})
    }
  })
}
