import { createHash } from 'node:crypto'
import { once } from 'node:events'
import type { Writable } from 'node:stream'
import { sql, type Kysely } from 'kysely'
import { asOperator, tenantRow } from './operator-session.ts'
import { exportOrder, TENANT_TABLES } from './tenant-tables.ts'

/** The first line of an export: what it is, of which schema, of which tenant. */
export interface ExportHeader {
  format: 'skills-db tenant export'
  version: 1
  /** The migrations applied to the database it was read from, sorted: an import needs the same. */
  migrations: string[]
  tenant: string
}

/** The last line: per table (tenants first), its rows and the SHA-256 of their lines; and of the file before it. */
export interface ExportManifest {
  tables: Record<string, { rows: number; sha256: string }>
  rows: number
  sha256: string
}

export interface ExportProgress {
  table: string
  rows: number
}

const FETCH = 1000

/**
 * Writes every row of one tenant, in every tenant table, its audit trail included, to `out` as
 * NDJSON: a header line ({@link ExportHeader}), one line per row (`{"t":"<table>","r":<the row as
 * PostgreSQL's to_jsonb writes it>}`, tenants first, then parents before children, each table in a
 * fixed order), and a manifest line ({@link ExportManifest}) with counts and checksums. A file
 * without its manifest is truncated, and import says so. Reads one snapshot (REPEATABLE READ, READ
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
      // What to_jsonb writes depends on these; fixed, so two exports of the same rows are the same bytes.
      await sql`select pg_catalog.set_config('timezone', 'UTC', true), pg_catalog.set_config('extra_float_digits', '1', true),
        pg_catalog.set_config('bytea_output', 'hex', true), pg_catalog.set_config('intervalstyle', 'postgres', true)`.execute(conn)
      await tenantRow(conn, tenantId)
      const file = createHash('sha256')
      const write = async (line: string, hashed = true) => {
        if (hashed) file.update(line)
        if (!out.write(line)) await once(out, 'drain')
      }
      const header: ExportHeader = { format: 'skills-db tenant export', version: 1, migrations, tenant: tenantId }
      await write(`${JSON.stringify(header)}\n`)
      const tables: ExportManifest['tables'] = {}
      for (const table of ['tenants', ...TENANT_TABLES.map((t) => t.table)]) {
        const hash = createHash('sha256')
        let rows = 0
        const column = table === 'tenants' ? sql`x.id` : sql`x.tenant_id`
        await sql`declare tenant_rows no scroll cursor for
          select pg_catalog.to_jsonb(x)::text as j from ${sql.table(`public.${table}`)} x
          where ${column} = ${tenantId}::text order by ${sql.raw(table === 'tenants' ? 'x.id' : exportOrder(table as never))}`.execute(conn)
        for (;;) {
          const { rows: batch } = await sql<{ j: string }>`fetch ${sql.raw(String(FETCH))} from tenant_rows`.execute(conn)
          for (const { j } of batch) {
            const line = `{"t":${JSON.stringify(table)},"r":${j}}\n`
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
      const manifest: ExportManifest = { tables, rows: Object.values(tables).reduce((n, t) => n + t.rows, 0), sha256: file.digest('hex') }
      await write(`${JSON.stringify({ manifest })}\n`, false)
      return manifest
    } finally {
      await sql`rollback`.execute(conn).catch(() => {})
    }
  })
}
