import { createHash } from 'node:crypto'
import type { Readable } from 'node:stream'
import { sql, type Kysely, type RawBuilder } from 'kysely'
import { exportMacText, tenantKeyMac, type ExportHeader, type ExportManifest, type ExportProgress } from './export-tenant.ts'
import { TABLES_UNCHANGED } from './migrations-without-table-changes.ts'
import { ndjsonLines } from './ndjson-lines.ts'
import { asOperator, TenantAdminError } from './operator-session.ts'
import { columnList, exportColumns, identitiesPastRows, READABLE_VERSIONS, rowsFromJson, TEXT_SETTINGS, type ExportColumn } from './row-json.ts'
import { TENANT_TABLES } from './tenant-tables.ts'

export interface ImportOptions {
  /**
   * Create the tenant although superuser or BYPASSRLS sessions are connected (the guard of 0005,
   * which stops tenants being made beside an unconfined single-tenant app): when none of them is the old app.
   */
  allowUnconfinedSessions?: boolean
  onProgress?: (p: ExportProgress) => void
}

const ORDER = ['tenants', ...TENANT_TABLES.map((t) => t.table)]
const BATCH = 500
/** And at most this many bytes of rows per insert: 500 rows of 1 MB each made one JSON array past what a string can hold (an outside review's unimportable export). */
const BATCH_BYTES = 16 * 1024 * 1024

/**
 * Loads a tenant that {@link exportTenant} wrote into this database, which must run the same
 * schema (the same migrations applied) and holding the tenant key the file is sealed with. In one
 * transaction: a file that is truncated, altered (a count or checksum of the manifest, its seal,
 * or an audit row that does not continue its hash chain), of another schema, or whose tenant id,
 * slug or domain (or any row's key) is already here, changes nothing, and the error says which.
 * The audit trail keeps its ids, times and hashes; the chain is checked row by row as it is
 * loaded. Exporting the imported tenant gives the same file. The tenant comes back active or
 * suspended as it was when exported (`active` says which). Holds the migration lock.
 *
 * Given a function that opens the file (as the CLI does), it reads the file twice: first to check
 * its seal, and only then loads it, so that a file not sealed with the tenant key learns nothing of
 * this database, neither from the errors, nor the progress, nor the time taken (an outside review
 * told taken slugs from free ones by the time an import took). Given a stream, it reads it once and
 * checks the seal at the end; what the database refused is said only once the seal is checked.
 *
 * @example
 * const manifest = await importTenant(db, () => createReadStream('acme.ndjson'))
 */
export async function importTenant(db: Kysely<any>, input: Readable | (() => Readable), options: ImportOptions = {}): Promise<ExportManifest & { tenant: string; active: boolean }> {
  return asOperator(db, async (conn, migrations) => {
    const open = typeof input === 'function' ? input : undefined
    // The first read's batches, by their SHA-256: the second loads only the same bytes (an outside
    // review swapped the file between the two reads, and the forged rows were loaded).
    const checked: string[] | undefined = open ? [] : undefined
    if (open) {
      const { header, manifest } = await readExport(open(), migrations, undefined, checked)
      await checkSeal(conn, header.tenant, manifest)
    }
    await sql`begin`.execute(conn)
    try {
      // A value's text read as it was written (row-json.ts).
      await sql`select ${TEXT_SETTINGS}`.execute(conn)
      if (options.allowUnconfinedSessions) await sql`select pg_catalog.set_config('skills_db.unconfined_sessions_ok', 'on', true)`.execute(conn)
      const columns = new Map<string, ExportColumn[]>()
      // What the database refused (a collision, a row of another tenant, a broken chain): said only
      // once the file is known to be sealed by the tenant key, so a forged file is refused as
      // unsealed (an outside review had one told which tenant held a slug). The rest of the file is
      // read and checked, not loaded.
      let refusal: unknown
      const load = async (header: ExportHeader, table: string, json: string, count: number, rowsSoFar: number) => {
        if (refusal !== undefined) return
        try {
          if (!columns.has(table)) columns.set(table, await exportColumns(conn, table))
          const rowsOf = rowsFromJson(columns.get(table)!, json, header.version)
          if (table === 'tenants') {
            await claimTenant(conn, header.tenant, rowsOf, columnList(columns.get(table)!), count)
          } else {
            const { rows } = await sql<{ n: number }>`with added as (
                insert into ${sql.table(`public.${table}`)} ${columnList(columns.get(table)!)} select r.* from ${rowsOf}
                where r.tenant_id = ${header.tenant}::text returning 1)
              select count(*)::int as n from added`.execute(conn).catch((error: unknown) => { throw collision(error, table, header.version) })
            if (rows[0]!.n !== count) throw new TenantAdminError(`the file's ${table} rows include rows of another tenant than ${header.tenant}: the file was altered`)
          }
          options.onProgress?.({ table, rows: rowsSoFar })
        } catch (error) {
          refusal = error
          await sql`rollback`.execute(conn)
        }
      }
      const { header, manifest, tenantRow } = await readExport(open ? open() : input as Readable, migrations, load, checked)
      const tenant = header.tenant
      await checkSeal(conn, tenant, manifest)
      if (refusal !== undefined) throw refusal
      for (const [table, cols] of columns) await identitiesPastRows(conn, table, cols)
      const { rows: head } = await sql<{ seq: string; hash: string }>`
        select seq::text as seq, encode(row_hash, 'hex') as hash from skills_db.audit_chain_heads where tenant_id = ${tenant}`.execute(conn)
      if (JSON.stringify(head[0] ?? null) !== JSON.stringify(manifest.auditHead)) {
        throw new TenantAdminError(`the imported audit chain ends at ${head[0] ? `seq ${head[0].seq}` : 'no chained row'}, the file's manifest says ${manifest.auditHead ? `seq ${manifest.auditHead.seq}` : 'none'}: the file was altered`)
      }
      if (!tenantRow) throw new TenantAdminError('the file has no tenants row: it is not an export of a tenant')
      await sql`insert into skills_db.tenant_lifecycle (tenant_id, slug, event, detail)
        select id, slug, 'imported', ${JSON.stringify({ rows: manifest.rows, sha256: manifest.sha256 })}::jsonb from public.tenants where id = ${tenant}`.execute(conn)
      const { rows: status } = await sql<{ active: boolean }>`select is_active as active from public.tenants where id = ${tenant}`.execute(conn)
      await sql`commit`.execute(conn)
      return { ...manifest, tenant, active: status[0]!.active }
    } catch (error) {
      await sql`rollback`.execute(conn).catch(() => {})
      throw error
    }
  })
}

/**
 * One pass over an export: its header (of this schema), its rows in batches handed to `load`, and
 * its manifest checked against what was read (counts, checksums, the total, the file's checksum).
 * A damaged or truncated file throws.
 */
async function readExport(input: Readable, migrations: string[],
  load?: (header: ExportHeader, table: string, json: string, count: number, rowsSoFar: number) => Promise<void>,
  checked?: string[]): Promise<{ header: ExportHeader; manifest: ExportManifest; tenantRow: boolean }> {
  const lines = ndjsonLines(input)
  const first = await lines.next()
  const header = parseHeader(first.done ? undefined : first.value)
  const shaping = (list: readonly string[]) => list.filter((m) => !TABLES_UNCHANGED.has(m))
  if (shaping(header.migrations).join(',') !== shaping(migrations).join(',')) {
    const missing = shaping(header.migrations).filter((m) => !migrations.includes(m))
    const extra = shaping(migrations).filter((m) => !header.migrations.includes(m))
    throw new TenantAdminError(`the file is of another schema: ${missing.length ? `this database lacks ${missing.join(', ')}` : ''}${missing.length && extra.length ? '; ' : ''}${extra.length ? `the file predates ${extra.join(', ')}` : ''}; import into a database migrated exactly as the one exported from`)
  }
  // What the first read checked, piece by piece: it records each piece's SHA-256, and the second
  // read goes on only with the same bytes, the header's included (an outside review rewrote its
  // version between the reads, and the rows were loaded as version 1's).
  let pieces = 0
  const sameAsChecked = (piece: string) => {
    if (!checked) return
    const digest = createHash('sha256').update(piece).digest('hex')
    if (!load) checked.push(digest)
    else if (checked[pieces] !== digest) throw new TenantAdminError('the file changed between its check and its load: import a copy that nothing writes to')
    pieces++
  }
  sameAsChecked(`header:${first.value}`)
  const file = createHash('sha256').update(`${first.value}\n`)
  // Per table: its rows read, and the SHA-256 of their lines so far.
  const seen = new Map<string, { rows: number; hash: ReturnType<typeof createHash> }>()
  let at = 0
  let batch: string[] = []
  let batchBytes = 0
  let lineNo = 1
  const flush = async () => {
    if (batch.length === 0) return
    const table = ORDER[at]!
    const json = `[${batch.join(',')}]`
    const count = batch.length
    batch = []
    batchBytes = 0
    sameAsChecked(`${table}:${json}`)
    await load?.(header, table, json, count, seen.get(table)!.rows)
  }
  let manifest: ExportManifest | undefined
  for (;;) {
    const next = await lines.next()
    if (next.done) break
    lineNo++
    const line = `${next.value}\n`
    if (manifest) throw new TenantAdminError(`line ${lineNo} follows the manifest: the file is not one export`)
    if (next.value.startsWith('{"manifest":')) {
      await flush()
      manifest = parseManifest(next.value, lineNo)
      continue
    }
    // The s flag: to_json leaves U+2028 and U+2029 unescaped in a row's text, and "." matches
    // neither without it (an outside review had every export of such a row refused).
    const m = /^\{"t":"([a-z_]+)","r":(\{.*\})\}$/s.exec(next.value)
    const index = m ? ORDER.indexOf(m[1]!) : -1
    if (!m || index < 0) throw new TenantAdminError(`line ${lineNo} is not a row of a skills-db tenant export`)
    if (index < at) throw new TenantAdminError(`line ${lineNo}: a row of ${m[1]} after rows of ${ORDER[at]}: the file was altered`)
    if (index > at) {
      await flush()
      at = index
    }
    file.update(line)
    const table = m[1]!
    if (!seen.has(table)) seen.set(table, { rows: 0, hash: createHash('sha256') })
    const read = seen.get(table)!
    read.rows++
    read.hash.update(line)
    batch.push(m[2]!)
    batchBytes += m[2]!.length
    if (batch.length >= BATCH || batchBytes >= BATCH_BYTES || table === 'tenants') await flush()
  }
  if (!manifest) throw new TenantAdminError(`the file ends at line ${lineNo} without its manifest: it is truncated; use a complete copy of the export`)
  for (const table of ORDER) {
    const want = manifest.tables[table] ?? { rows: 0, sha256: createHash('sha256').digest('hex') }
    const read = seen.get(table)
    const got = { rows: read?.rows ?? 0, sha256: (read?.hash ?? createHash('sha256')).digest('hex') }
    if (want.rows !== got.rows || want.sha256 !== got.sha256) {
      throw new TenantAdminError(`the file's ${table} rows do not match its manifest (${got.rows} row(s) read, ${want.rows} listed${want.rows === got.rows ? ', checksums differ' : ''}): the file was altered or damaged`)
    }
  }
  // Its total too, which the tenant's lifecycle record keeps: an outside review had it edited to 999999 and recorded.
  if (manifest.rows !== ORDER.reduce((n, table) => n + (seen.get(table)?.rows ?? 0), 0)) {
    throw new TenantAdminError('the manifest\'s total of rows is not the sum of its tables\' rows: the file was altered')
  }
  if (manifest.sha256 !== file.digest('hex')) throw new TenantAdminError('the file does not match its manifest\'s checksum: it was altered or damaged')
  return { header, manifest, tenantRow: seen.has('tenants') }
}

/** The seal: checksums anyone can recompute; the tenant key's MAC of them only its holders. */
async function checkSeal(conn: Kysely<any>, tenant: string, manifest: ExportManifest): Promise<void> {
  const keyId = manifest.mac.split(':')[0]!
  const expected = await tenantKeyMac(conn, exportMacText(tenant, manifest), keyId)
  if (expected === undefined) throw new TenantAdminError(`the file is sealed with tenant key "${keyId}", which this database does not hold: import into a database given the same SKILLS_DB_TENANT_KEYS as the one exported from`)
  if (expected !== manifest.mac) throw new TenantAdminError('the file\'s seal (the tenant key\'s MAC of its checksum) does not match: it was altered, its checksums refitted')
}

/** The tenants row: refused when its id, slug or domain is taken here; then the import is under way for it. */
async function claimTenant(conn: Kysely<any>, tenant: string, rowsOf: RawBuilder<unknown>, names: RawBuilder<unknown>, count: number): Promise<void> {
  if (count !== 1) throw new TenantAdminError('the file has more than one tenants row: it is not an export of one tenant')
  const { rows: row } = await sql<{ id: string; slug: string; domain: string | null }>`
    select r.id, r.slug, r.domain from ${rowsOf}`.execute(conn)
  const r = row[0]!
  if (r.id !== tenant) throw new TenantAdminError(`the file's tenants row is "${r.id}", not the tenant its header names ("${tenant}"): the file was altered`)
  const { rows: taken } = await sql<{ id: string; slug: string; domain: string | null }>`
    select id, slug, domain from public.tenants where id = ${r.id} or slug = ${r.slug} or (domain is not null and domain = ${r.domain})`.execute(conn)
  for (const t of taken) {
    if (t.id === r.id) throw new TenantAdminError(`tenant "${r.id}" already exists in this database: delete it first (skills-db tenant delete), or import elsewhere`)
    if (t.slug === r.slug) throw new TenantAdminError(`slug "${r.slug}" is taken here by tenant "${t.id}": the import would collide`)
    throw new TenantAdminError(`domain "${r.domain}" is taken here by tenant "${t.id}": the import would collide`)
  }
  await sql`insert into public.tenants ${names} select r.* from ${rowsOf}`.execute(conn)
  // SET LOCAL (a literal: SET takes no parameter) rather than set_config(), so Citus sends it to the nodes whose triggers read it.
  await sql`set local skills_db.importing_tenant = ${sql.lit(tenant)}`.execute(conn)
}

function collision(error: unknown, table: string, version: number): unknown {
  const e = error as { code?: string; constraint?: string; message?: string }
  if (e.code === '23505') return new TenantAdminError(`a row of ${table} collides with a row already in this database (${e.constraint}): the tenant's rows were imported here before, or the file was altered`, { cause: error })
  if (e.code === '23503') return new TenantAdminError(`a row of ${table} references a row the file does not hold (${e.constraint}): the file was altered`, { cause: error })
  // Version 1 wrote an audit row's JSON null metadata as null, read back as SQL NULL: its hash then differs.
  if (e.code === 'XX001') return new TenantAdminError(`${e.message}${version === 1 && table === 'audit_logs' ? ', or (a file of version 1) the row\'s metadata was JSON null, which version 1 cannot tell from SQL NULL: export the tenant again with this skills-db, if it still exists' : ''}`, { cause: error })
  return error
}

function parseHeader(line: string | undefined): ExportHeader {
  let header: Partial<ExportHeader> | undefined
  try {
    header = line === undefined ? undefined : JSON.parse(line)
  } catch {
    header = undefined
  }
  if (header?.format !== 'skills-db tenant export') throw new TenantAdminError('the file is not a skills-db tenant export (its first line is not an export\'s header)')
  if (!READABLE_VERSIONS.includes(header.version as number)) throw new TenantAdminError(`the file is an export of version ${JSON.stringify(header.version)}; this skills-db reads versions ${READABLE_VERSIONS.join(' and ')}: import it with the skills-db that wrote it`)
  if (!Array.isArray(header.migrations) || !header.migrations.every((m) => typeof m === 'string') || typeof header.tenant !== 'string') throw new TenantAdminError('the export\'s header is damaged')
  return header as ExportHeader
}

function parseManifest(line: string, lineNo: number): ExportManifest {
  try {
    const { manifest } = JSON.parse(line) as { manifest: ExportManifest }
    if (manifest && typeof manifest.sha256 === 'string' && typeof manifest.rows === 'number' && typeof manifest.mac === 'string' && manifest.mac.includes(':')
      && typeof manifest.tables === 'object' && manifest.tables !== null
      && Object.values(manifest.tables).every((t) => typeof t?.rows === 'number' && typeof t?.sha256 === 'string')
      && (manifest.auditHead === null || (typeof manifest.auditHead?.seq === 'string' && typeof manifest.auditHead?.hash === 'string'))) return manifest
  } catch {
    // reported below
  }
  throw new TenantAdminError(`line ${lineNo}, the manifest, is damaged`)
}
