import { createReadStream, createWriteStream, existsSync, linkSync, openSync, rmSync, statSync } from 'node:fs'
import { finished } from 'node:stream/promises'
import { sql, type Kysely } from 'kysely'
import { deleteTenant } from '../../tenant-admin/delete-tenant.ts'
import { exportTenant } from '../../tenant-admin/export-tenant.ts'
import { importTenant } from '../../tenant-admin/import-tenant.ts'
import { asOperator, beingDeleted } from '../../tenant-admin/operator-session.ts'
import { listTenants, showTenant } from '../../tenant-admin/show-tenant.ts'
import { createTenant } from '../../tenancy/create-tenant.ts'
import { activateTenant, suspendTenant } from '../../tenancy/tenant-status.ts'
import { UsageError, type Command, type OptionSpec, type OptionValues } from '../command.ts'
import { lockOptions, TARGET } from '../options.ts'
import { inRun } from '../../online/run-context.ts'
import { usingTarget } from '../target.ts'

const JSON_OUT: Record<string, OptionSpec> = {
  json: { type: 'boolean', help: 'print the result as JSON on stdout (and nothing else there)' },
}
/** How long any statement waits for a lock another session holds (LOCK TABLE, DDL) before the command stops and names it. */
const LOCK_WAIT: Record<string, OptionSpec> = {
  'lock-retry-budget-ms': { type: 'string', value: '<ms>', help: 'how long to wait for a lock another session holds (a LOCK TABLE, DDL) before stopping and naming it (default 120000)' },
}
const COMMON = { ...TARGET, ...JSON_OUT, ...LOCK_WAIT }
const TENANT_ID = [{ name: '<tenant>', required: true, help: 'the tenant\'s id, or its slug (skills-db tenant list shows both); id:<id> or slug:<slug> says which' }]

/** Prints the result: JSON with --json, else the human lines. */
function report(values: OptionValues, json: unknown, human: () => void): number {
  if (values.json) console.log(JSON.stringify(json, null, 2))
  else human()
  return 0
}

/** Progress on stderr, on a terminal only, one line rewritten in place. */
function progressLine(values: OptionValues): ((text: string) => void) & { done(): void } {
  const on = process.stderr.isTTY && !values.json
  let last = 0
  const show = Object.assign((text: string) => {
    if (!on || Date.now() - last < 100) return
    last = Date.now()
    process.stderr.write(`\r\x1b[2K${text}`)
  }, { done: () => { if (on) process.stderr.write('\r\x1b[2K') } })
  return show
}

function tenantArg(positionals: string[]): string {
  const id = positionals[0]!
  if (!id.trim()) throw new UsageError('the tenant id is empty')
  return id
}

/**
 * The id of the tenant the argument names: `id:<id>` or `slug:<slug>` say which; otherwise its id,
 * else its slug (what `tenant list` and URLs show); none, a one-line error. An argument that is one
 * tenant's id and another's slug is refused: anyone signing up may pick a slug that is another
 * tenant's id (ids are not secret: API keys carry them), and an outside review had the operator
 * suspend and delete the wrong tenant that way.
 */
function tenantIdOf(db: Kysely<any>, arg: string): Promise<string> {
  // Under the migration lock: only there does the owner (not a superuser) see every tenant (0014).
  return asOperator(db, (conn) => tenantIdIn(conn, arg))
}

/** {@link tenantIdOf} on a connection that holds the migration lock already. */
async function tenantIdIn(conn: Kysely<any>, arg: string): Promise<string> {
  const named = /^(id|slug):(.+)$/.exec(arg)
  if (named?.[1] === 'id') return named[2]!
  const { rows } = await sql<{ id: string; slug: string }>`select id, slug from public.tenants
    where ${named ? sql`slug = ${named[2]!}` : sql`id = ${arg} or slug = ${arg}`}`.execute(conn)
  if (named) {
    if (!rows[0]) throw new UsageError(`no tenant has the slug ${JSON.stringify(named[2])}: skills-db tenant list shows the slugs`)
    return rows[0].id
  }
  const byId = rows.find((r) => r.id === arg)
  const bySlug = rows.find((r) => r.slug === arg)
  if (byId && bySlug && byId.id !== bySlug.id) {
    throw new UsageError(`${JSON.stringify(arg)} is the id of one tenant (slug ${byId.slug}) and the slug of another (id ${bySlug.id}): say which, id:${arg} or slug:${arg}`)
  }
  const found = (byId ?? bySlug)?.id
  if (found === undefined && await beingDeleted(conn, arg)) return arg
  // JSON.stringify: a name holding a newline is shown whole, on one line (an outside review had the error cut at it).
  if (found === undefined) throw new UsageError(`no tenant has the id or slug ${JSON.stringify(arg)}: skills-db tenant list shows both`)
  return found
}

/** The key the lifecycle calls sign with: SKILLS_DB_TENANT_KEY, else the first of the migrator's SKILLS_DB_TENANT_KEYS. */
function needTenantKey(): void {
  if (process.env.SKILLS_DB_TENANT_KEY) return
  const first = (process.env.SKILLS_DB_TENANT_KEYS ?? '').split(',').map((k) => k.trim()).find(Boolean)
  if (!first) throw new Error('this command signs with the tenant key: set SKILLS_DB_TENANT_KEY (or SKILLS_DB_TENANT_KEYS, as for the migrator)')
  process.env.SKILLS_DB_TENANT_KEY = first
}

/** Runs a lifecycle call of the app's API as the operator: with the migration lock's view of every tenant. */
function asOperatorCall<T>(values: OptionValues, fn: (conn: Kysely<any>) => Promise<T>, { force = false } = {}): Promise<T> {
  needTenantKey()
  return usingTarget(values, (db) => asOperator(db, async (conn) => {
    // The guard of 0005 names superuser and BYPASSRLS sessions; --force says none of them is the old app.
    if (force) await sql`select pg_catalog.set_config('skills_db.unconfined_sessions_ok', 'on', false)`.execute(conn)
    return fn(conn)
  }), { quiet: Boolean(values.json) })
}

const list: Command = {
  name: 'tenant list',
  summary: 'Lists every tenant: id, slug, name, domain, plan, active or suspended, created. Reads as the migrator (holds the migration lock).',
  options: COMMON,
  run: (values) => usingTarget(values, async (db) => {
    const tenants = await listTenants(db)
    return report(values, tenants, () => {
      console.log('id  slug  status  plan  domain  "name"')
      for (const t of tenants) console.log(`${t.id}  ${t.slug}  ${t.active ? 'active' : 'suspended'}  ${t.plan}  ${t.domain ?? '-'}  "${t.name}"`)
      console.log(`${tenants.length} tenant(s)`)
    })
  }, { quiet: Boolean(values.json) }),
}

const show: Command = {
  name: 'tenant show',
  summary: 'One tenant: its row, its rows and bytes per table, what was done to it (created, suspended, …), and on Citus its shard, node and citus_stat_tenants.',
  positionals: TENANT_ID,
  options: COMMON,
  run: (values, positionals) => usingTarget(values, async (db) => {
    const id = await tenantIdOf(db, tenantArg(positionals))
    const t = await showTenant(db, id)
    return report(values, t, () => {
      console.log(`${t.id}  ${t.slug}  ${t.beingDeleted ? 'being deleted (a delete stopped before it finished: run tenant delete again)' : t.active ? 'active' : 'suspended'}  plan ${t.plan}${t.domain ? `  domain ${t.domain}` : ''}  "${t.name}"  created ${t.createdAt}`)
      for (const [table, { rows, bytes }] of Object.entries(t.tables)) console.log(`  ${table.padEnd(18)} ${String(rows).padStart(10)} row(s) ${String(bytes).padStart(14)} bytes`)
      for (const h of t.history) console.log(`  ${h.at} ${h.event} (by ${h.byRole})`)
      if (t.citus) console.log(`  citus: shard ${t.citus.shardId} on ${t.citus.node}${t.citus.stats ? `, ${JSON.stringify(t.citus.stats)}` : ''}`)
    })
  }, { quiet: Boolean(values.json) }),
}

const create: Command = {
  name: 'tenant create',
  summary: 'Creates a tenant, and its first admin user when --admin-email is given, as the app\'s createTenant does (signed with SKILLS_DB_TENANT_KEY, else the first of SKILLS_DB_TENANT_KEYS). Needs the open phase.',
  options: {
    ...COMMON,
    name: { type: 'string', value: '<name>', help: 'the tenant\'s name (required)' },
    slug: { type: 'string', value: '<slug>', help: 'its slug: lowercase letters, digits and hyphens (required)' },
    domain: { type: 'string', value: '<host>', help: 'a domain of its own, e.g. acme.example.com' },
    plan: { type: 'string', value: '<plan>', help: 'default freemium' },
    id: { type: 'string', value: '<id>', help: 'its id (default a new UUID)' },
    'admin-email': { type: 'string', value: '<email>', help: 'the first admin user\'s email' },
    'admin-name': { type: 'string', value: '<name>', help: 'the first admin user\'s name' },
    force: { type: 'boolean', help: 'create it although superuser or BYPASSRLS sessions are connected (a psql session as postgres, say), none of them the single-tenant app' },
  },
  run(values) {
    if (typeof values.name !== 'string' || typeof values.slug !== 'string') throw new UsageError('tenant create needs --name and --slug')
    if (typeof values['admin-name'] === 'string' && typeof values['admin-email'] !== 'string') throw new UsageError('--admin-name needs --admin-email')
    const tenant = {
      name: values.name, slug: values.slug,
      ...(typeof values.domain === 'string' ? { domain: values.domain } : {}),
      ...(typeof values.plan === 'string' ? { plan: values.plan } : {}),
      ...(typeof values.id === 'string' ? { id: values.id } : {}),
    }
    const admin = typeof values['admin-email'] === 'string'
      ? { email: values['admin-email'], ...(typeof values['admin-name'] === 'string' ? { name: values['admin-name'] } : {}) } : undefined
    return asOperatorCall(values, async (conn) => {
      const created = await createTenant(conn, tenant, admin)
      return report(values, created, () => console.log(`created tenant ${created.tenantId} (${tenant.slug})${created.adminId ? `, first admin ${created.adminId}` : ''}`))
    }, { force: Boolean(values.force) })
  },
}

const statusCommand = (name: 'suspend' | 'activate'): Command => ({
  name: `tenant ${name}`,
  summary: name === 'suspend'
    ? 'Suspends a tenant: from the next request on, withTenant refuses it and its API keys resolve to nobody. Signed with the tenant key, as the app\'s suspendTenant.'
    : 'Makes a suspended tenant active again (not one being deleted).',
  positionals: TENANT_ID,
  options: COMMON,
  run: (values, positionals) => asOperatorCall(values, async (conn) => {
    const id = await tenantIdIn(conn, tenantArg(positionals))
    const outcome = await (name === 'suspend' ? suspendTenant : activateTenant)(conn, id)
    return report(values, { tenantId: id, outcome }, () => console.log(`tenant ${id}: ${outcome === 'unchanged' ? `already ${name === 'suspend' ? 'suspended' : 'active'}` : outcome}`))
  }),
})

const exportCommand: Command = {
  name: 'tenant export',
  summary: 'Writes every row of one tenant, its audit trail included, as NDJSON with a manifest of counts and checksums, from one snapshot; streamed, in flat memory. Holds the migration lock while it reads.',
  positionals: TENANT_ID,
  options: {
    ...COMMON,
    out: { type: 'string', value: '<file>', help: 'where to write it (required; refused if it exists). Written as <file>.partial, renamed when complete' },
  },
  run(values, positionals) {
    const arg = tenantArg(positionals)
    if (typeof values.out !== 'string' || values.out === '') throw new UsageError('tenant export needs --out <file>')
    const out = values.out
    if (existsSync(out)) throw new UsageError(`${out} exists: give another --out, or remove it first`)
    const partial = `${out}.partial`
    return usingTarget(values, async (db) => {
      const id = await tenantIdOf(db, arg)
      const progress = progressLine(values)
      let fd: number
      try {
        // wx: a .partial that exists is another export's, writing now or killed; never share it (an
        // outside review had two exports to one --out report success for one file of one tenant).
        // 0600: the file holds a customer's rows (emails, key hashes); the operator widens it if needed (a newcomer's export was 0644).
        fd = openSync(partial, 'wx', 0o600)
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code
        throw new UsageError(code === 'EEXIST' ? `${partial} exists: another export is writing it, or one was stopped; remove it once no export runs, or give another --out`
          : `cannot write ${partial}: ${code ?? (error as Error).message}`)
      }
      const stream = createWriteStream(partial, { fd })
      // A write that fails (a full disk, a file size limit) ends the export in one line: without a
      // listener the stream's 'error' was thrown out of any await, with a stack.
      stream.on('error', () => {})
      try {
        const manifest = await exportTenant(db, id, stream, (p) => progress(`export ${id}: ${p.table} ${p.rows} row(s)`))
        stream.end()
        await finished(stream)
        // A link, not a rename: it fails if --out appeared meanwhile, where a rename would replace it.
        try {
          linkSync(partial, out)
        } catch (error) {
          throw new UsageError((error as NodeJS.ErrnoException).code === 'EEXIST' ? `${out} appeared while the export ran: give another --out` : `cannot write ${out}: ${(error as Error).message}`)
        }
        rmSync(partial)
        progress.done()
        const peakRssMb = Math.round(process.resourceUsage().maxRSS / 1024)
        return report(values, { tenantId: id, file: out, ...manifest, peakRssMb }, () => {
          for (const [table, t] of Object.entries(manifest.tables)) if (t.rows > 0) console.log(`  ${table.padEnd(18)} ${String(t.rows).padStart(10)} row(s)  sha256 ${t.sha256.slice(0, 16)}…`)
          console.log(`exported tenant ${id}: ${manifest.rows} row(s) to ${out} (its lines before the manifest: sha256 ${manifest.sha256}); peak RSS ${peakRssMb} MB`)
        })
      } catch (error) {
        progress.done()
        stream.destroy()
        rmSync(partial, { force: true })
        throw error
      }
    }, { quiet: Boolean(values.json) })
  },
}

const importCommand: Command = {
  name: 'tenant import',
  summary: 'Loads a tenant from a file of tenant export into this database, which must be migrated exactly as the one exported from. One transaction: a truncated, altered or colliding file changes nothing. Holds the migration lock.',
  positionals: [{ name: '<file>', required: true, help: 'a file skills-db tenant export wrote' }],
  options: {
    ...COMMON,
    force: { type: 'boolean', help: 'import although superuser or BYPASSRLS sessions are connected, none of them the single-tenant app' },
  },
  run(values, positionals) {
    const file = positionals[0]!
    if (!existsSync(file)) throw new UsageError(`${file} does not exist`)
    if (!statSync(file).isFile()) throw new UsageError(`${file} is not a file: give the file tenant export wrote`)
    return usingTarget(values, async (db) => {
      const progress = progressLine(values)
      try {
        // Opened twice: the seal is checked before anything is loaded or said of this database.
        const manifest = await importTenant(db, () => createReadStream(file), {
          allowUnconfinedSessions: Boolean(values.force), onProgress: (p) => progress(`import: ${p.table} ${p.rows} row(s)`),
        })
        progress.done()
        return report(values, manifest, () => console.log(`imported tenant ${manifest.tenant}: ${manifest.rows} row(s), counts and checksums as the manifest lists them; ${manifest.active ? 'active' : 'suspended'}, as it was when exported${manifest.active ? '' : ` (skills-db tenant activate ${manifest.tenant} lets its requests in)`}`))
      } catch (error) {
        progress.done()
        throw error
      }
    }, { quiet: Boolean(values.json) })
  },
}

const deleteCommand: Command = {
  name: 'tenant delete',
  summary: 'Removes a suspended tenant and all its rows, its audit trail included, in short batches, children before parents, while the other tenants\' requests go on; resumes where a killed run stopped. skills_db.tenant_lifecycle keeps the record. Needs --yes.',
  positionals: TENANT_ID,
  options: {
    ...COMMON,
    yes: { type: 'boolean', help: 'yes, remove it: nothing brings it back but an import of an export made before' },
    'batch-size': { type: 'string', value: '<rows>', help: 'rows per transaction (default 1000)' },
  },
  run(values, positionals) {
    const arg = tenantArg(positionals)
    if (!values.yes) throw new UsageError(`tenant delete removes every row of tenant ${arg} for good: add --yes (export it first: skills-db tenant export ${arg} --out <file>)`)
    const batchSize = values['batch-size'] === undefined ? undefined : Number(values['batch-size'])
    if (batchSize !== undefined && (!Number.isInteger(batchSize) || batchSize < 1)) throw new UsageError(`--batch-size ${String(values['batch-size'])} is not a whole number of rows, 1 or more`)
    return usingTarget(values, async (db) => {
      const id = await tenantIdOf(db, arg)
      const progress = progressLine(values)
      try {
        const outcome = await deleteTenant(db, id, { ...(batchSize ? { batchSize } : {}), onProgress: (p) => progress(`delete ${id}: ${p.table} ${p.deleted} row(s)`) })
        progress.done()
        const total = Object.values(outcome.rows).reduce((n, r) => n + r, 0)
        return report(values, { tenantId: id, ...outcome }, () => console.log(`deleted tenant ${id}${outcome.resumed ? ' (resumed)' : ''}: ${total} row(s)`))
      } catch (error) {
        progress.done()
        throw error
      }
    }, { quiet: Boolean(values.json) })
  },
}

/** Each command under its --lock-retry-budget-ms: every wait of the operator's session is bounded by it (operator-session.ts). */
/**
 * Each tenant command with its lock options, and what it waits for said on stderr (another
 * migrator running, a session holding the migration lock's table): an outside review had a
 * command wait behind a migrator with no word.
 */
const withLockWait = (command: Command): Command => ({
  ...command,
  run: (values, positionals) => inRun({ ...lockOptions(values), logger: { info: (m) => console.error(m) } }, () => command.run(values, positionals)),
})

export const TENANT_COMMANDS: Command[] = [list, show, create, statusCommand('suspend'), statusCommand('activate'), exportCommand, importCommand, deleteCommand].map(withLockWait)
