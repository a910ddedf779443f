import { sql, type Kysely } from 'kysely'
import pg from 'pg'
import { connectClient } from '../../src/connection/pg-client.ts'
import { parseTenantKey, signTenantContext } from '../../src/tenancy/tenant-key.ts'
import { NOT_THE_OLD_APP } from './tenants.ts'
import { TEST_TENANT_KEY } from './tenant-key.ts'

/**
 * The side-channel attack of the outside review, rebuilt: as the app role, probe every text and key
 * column of every table it may read, once with the value tenant B holds and once with a value of
 * the same length and shape that no tenant holds, and compare everything the app role can observe:
 *
 * - EXPLAIN (ANALYZE, BUFFERS, VERBOSE, SETTINGS, WAL) with costs, under every combination of the
 *   planner's scan settings (sequential, index, index-only and bitmap scans on or off), with the
 *   planner's costs as they are and all set to zero (ties between plans then go the other way):
 *   row counts, "Rows Removed by Filter", buffers, estimates;
 * - the statistics counters of the table and each of its indexes (scans, tuples read and fetched,
 *   blocks), around the same query run for real;
 * - for equality, a prefix range, LIKE and "less than": what a prefix search needs.
 *
 * The signal must be identical, the probed value aside, whether or not B holds the value: then
 * nothing the app role sees depends on B's values. It runs inside A's transaction, after A's
 * context was switched off or pointed at B by hand inside it, and with no tenant at all.
 */

export const TENANT_A = 'atenant'
export const TENANT_B = 'qtenant'
export const TENANT_C = 'ctenant'

/**
 * Rows in every table for the default tenant, A (values starting with 'a') and B (values starting
 * with 'q', its secrets); C is inactive. A value no tenant holds starts with 'w' instead, so a
 * prefix range of B's finds nothing of A's or the default tenant's, as does one of the 'w' value.
 */
export async function seedSecrets(admin: Kysely<any>): Promise<void> {
  const rows = (p: string, tenant: string) => `
    insert into users (id, tenant_id, email, name, image, role) values ('${p}users.id', '${tenant}', '${p}users.email@example', '${p}users.name', '${p}users.image', '${p}users.role');
    insert into skills (id, tenant_id, name, slug, description, category, content, author_id, forked_from_id, status) values
      ('${p}skills.id', '${tenant}', '${p}skills.name', '${p}skills.slug', '${p}skills.description', '${p}skills.category', '${p}skills.content', '${p}users.id', '${p}skills.forked', '${p}skills.status');
    insert into ratings (id, tenant_id, skill_id, user_id, rating, comment) values ('${p}ratings.id', '${tenant}', '${p}skills.id', '${p}users.id', 4, '${p}ratings.comment');
    insert into usage_events (id, tenant_id, tool_name, skill_id, user_id) values ('${p}usage.id', '${tenant}', '${p}usage.tool', '${p}skills.id', '${p}users.id');
    insert into skill_versions (id, tenant_id, skill_id, version, content_url, content_hash, content_type, name, description, created_by) values
      ('${p}versions.id', '${tenant}', '${p}skills.id', ${p === 'q' ? 7777 : 1}, '${p}versions.url', '${p}versions.hash', '${p}versions.type', '${p}versions.name', '${p}versions.description', '${p}users.id');
    insert into skill_embeddings (id, tenant_id, skill_id, embedding, model_name, model_version, input_hash) values
      ('${p}embeddings.id', '${tenant}', '${p}skills.id', '{1,2}', '${p}embeddings.model', '${p}embeddings.version', '${p}embeddings.hash');
    insert into skill_reviews (id, tenant_id, skill_id, requested_by, categories, summary, suggested_description, reviewed_content_hash, model_name) values
      ('${p}reviews.id', '${tenant}', '${p}skills.id', '${p}users.id', '{}', '${p}reviews.summary', '${p}reviews.suggested', '${p}reviews.hash', '${p}reviews.model');
    insert into api_keys (id, tenant_id, user_id, key_hash, key_prefix, name) values ('${p}keys.id', '${tenant}', '${p}users.id', '${p}keys.hash0123456789abcdef', '${p}keys.prefix', '${p}keys.name');
    insert into site_settings (id, tenant_id, ollama_url, ollama_model) values ('${p}settings.id', '${tenant}', '${p}settings.url', '${p}settings.model');
    insert into audit_logs (tenant_id, actor_id, action, resource_type, resource_id, ip_address)
      select '${tenant}', '${p}users.id', '${p}audit.action', '${p}audit.type', '${p}audit.resource', '${p}audit.ip'
      from generate_series(1, ${p === 'q' ? 3 : 1});`
  await sql.raw(`${NOT_THE_OLD_APP}
    insert into tenants (id, name, slug, domain, logo, plan) values
      ('${TENANT_A}', 'aAlpha', 'aalpha', 'aalpha.example', 'alogo', 'aplan'),
      ('${TENANT_B}', 'qBravo', 'qbravo', 'qbravo.example', 'qlogo', 'qplan');
    insert into tenants (id, name, slug, is_active) values ('${TENANT_C}', 'cCharlie', 'ccharlie', false);
    ${rows('a', TENANT_A)}
    ${rows('q', TENANT_B)}`).execute(admin)
  // (Where 0011 made them: the attack runs on older schemas too, to show what it finds there.)
  if ((await sql<{ t: string | null }>`select to_regclass('audit_signatures')::text as t`.execute(admin)).rows[0]?.t) {
    await sql.raw(`insert into audit_signatures (tenant_id, seq, key_id, signature, signed_at)
      select tenant_id, seq, 'k', tenant_id || 'sig', now() from audit_logs where tenant_id in ('${TENANT_A}', '${TENANT_B}')`).execute(admin)
  }
  // Hint bits and the visibility map set once, so no probe pays for them and another does not.
  await sql.raw('vacuum').execute(admin)
}

export interface ProbeColumn {
  table: string
  column: string
  type: string
  /** B's value, and one of the same shape no tenant holds. */
  held: string
  unheld: string
}

/** Every text, integer, uuid or bytea column of every table the app role may read, with B's value in it. */
export async function probeColumns(admin: Kysely<any>, appRole: string): Promise<ProbeColumn[]> {
  const { rows } = await sql<{ table: string; column: string; type: string }>`
    select c.relname as table, a.attname as column, pg_catalog.format_type(a.atttypid, null) as type
    from pg_class c join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
    where c.relnamespace = 'public'::regnamespace and c.relkind = 'r' and has_table_privilege(${appRole}, c.oid, 'SELECT')
      and a.atttypid in ('text'::regtype, 'integer'::regtype, 'bigint'::regtype, 'uuid'::regtype, 'bytea'::regtype)
    order by 1, 2`.execute(admin)
  const out: ProbeColumn[] = []
  for (const r of rows) {
    const tenantColumn = r.table === 'tenants' ? 'id' : 'tenant_id'
    // A value of B's that A does not hold too (A sees its own rows: those would differ for that reason).
    const found = await sql<{ v: string | null }>`select v from (
        select ${sql.ref(r.column)}::text as v from ${sql.table(r.table)} where ${sql.ref(tenantColumn)} = ${TENANT_B} and ${sql.ref(r.column)} is not null
        except select ${sql.ref(r.column)}::text from ${sql.table(r.table)} where ${sql.ref(tenantColumn)} = ${TENANT_A}) b
      order by length(v) desc, v desc limit 1`.execute(admin)
    const held = found.rows[0]?.v
    if (held == null) continue
    out.push({ ...r, held, unheld: unheldLike(held, r.type) })
  }
  return out
}

/** A value of the same type and length as `held` that no tenant holds. */
function unheldLike(held: string, type: string): string {
  if (type === 'text') return held.startsWith('q') ? `w${held.slice(1)}` : `w${held.slice(1)}`
  if (type === 'integer' || type === 'bigint') return String(Number(held) + 1_000_000)
  if (type === 'uuid') return `ffffffff${held.slice(8)}`
  return `\\xff${held.slice(4)}` // bytea, as its text
}

/**
 * The probes of one column and value: SQL conditions (the value spliced in as a literal, as the
 * review's own queries did), each with the literals it contains, longest first, which the
 * comparison reads as placeholders.
 */
function conditions(c: ProbeColumn, value: string): { sql: string; literals: string[] }[] {
  const col = `"${c.column}"`
  const lit = `'${value.replaceAll("'", "''")}'::${c.type}`
  if (c.type === 'text') {
    const prefix = value.slice(0, 4)
    const after = prefix.slice(0, -1) + String.fromCharCode(prefix.charCodeAt(prefix.length - 1) + 1)
    const literals = [value, after, prefix]
    return [`${col} = ${lit}`, `${col} >= '${prefix}' and ${col} < '${after}'`, `${col} like '${prefix}%'`, `${col} < ${lit}`].map((sql) => ({ sql, literals }))
  }
  if (c.type === 'integer' || c.type === 'bigint') {
    const after = String(Number(value) + 10)
    return [`${col} = ${value}`, `${col} >= ${value} and ${col} < ${after}`].map((sql) => ({ sql, literals: [after, value] }))
  }
  return [{ sql: `${col} = ${lit}`, literals: [value] }]
}

/**
 * `text` with each of `literals` (longest first) read as a placeholder: inside quoted strings, and
 * numbers in the conditions a plan prints (not in costs, widths or counts).
 */
function placeholders(text: string, literals: string[], { everywhere = false } = {}): string {
  const swap = (part: string, whole: boolean) => literals.reduce((out, literal, i) =>
    whole ? out.replace(new RegExp(`\\b${literal}\\b`, 'g'), `<${i}>`) : out.split(literal).join(`<${i}>`), part)
  return text.split('\n').map((line) => {
    const quoted = line.replace(/'(?:[^']|'')*'/g, (q) => swap(q, false))
    return (everywhere || /^(?!.*Rows Removed).*(Cond|Filter): /.test(quoted)) && literals.every((l) => /^\d+$/.test(l)) ? swap(quoted, true) : quoted
  }).join('\n')
}

export type AttackContext = 'tenant A entered' | 'A entered, then the context switched off' | 'A entered, then the setting pointed at B' | 'no tenant'
export const ATTACK_CONTEXTS: AttackContext[] = ['tenant A entered', 'A entered, then the context switched off', 'A entered, then the setting pointed at B', 'no tenant']

const SCANS = ['enable_seqscan', 'enable_indexscan', 'enable_indexonlyscan', 'enable_bitmapscan'] as const
const ZERO_COSTS = 'set local seq_page_cost = 0; set local random_page_cost = 0; set local cpu_tuple_cost = 0; set local cpu_index_tuple_cost = 0; set local cpu_operator_cost = 0;'
/**
 * Every combination of the scan settings, with the costs as they are and all zero. The counters are
 * read (each read costs about a millisecond) under the settings as they are and the review's (no
 * sequential and no bitmap scan), costs as they are or zero; under the others, the plan EXPLAIN
 * ANALYZE shows is what they would count.
 */
export const PLANNER_SETTINGS: { sql: string; counted: boolean }[] = [false, true].flatMap((zero) =>
  Array.from({ length: 2 ** SCANS.length }, (_, bits) => {
    const off = SCANS.filter((_s, i) => bits & (1 << i))
    return {
      sql: SCANS.map((s) => `set local ${s} = ${off.includes(s) ? 'off' : 'on'};`).join(' ') + (zero ? ` ${ZERO_COSTS}` : ''),
      counted: off.length === 0 || off.join() === 'enable_seqscan,enable_bitmapscan',
    }
  }))

const KEY = parseTenantKey(TEST_TENANT_KEY, 'TEST_TENANT_KEY')

/** Opens the transaction of `context` on the app role's session. */
async function enter(client: pg.Client, context: AttackContext): Promise<void> {
  await client.query('begin')
  if (context === 'no tenant') return
  const { rows } = await client.query<{ challenge: string }>('select tenant_context.challenge() as challenge')
  await client.query('select tenant_context.enter($1::text, $2::text)', [TENANT_A, signTenantContext(KEY, TENANT_A, rows[0]!.challenge)])
  if (context === 'A entered, then the context switched off') await client.query(`set local tenant_context.entered = 'off'`)
  if (context === 'A entered, then the setting pointed at B') await client.query(`select set_config('app.current_tenant_id', $1, true)`, [TENANT_B])
}

/** What the app role observed: the probed value replaced, buffer reads and hits counted together (caching is not a tenant's value). */
function normalized(text: string, literals: string[]): string {
  return placeholders(text, literals)
    .replace(/shared hit=(\d+)(?: read=(\d+))?(?: dirtied=\d+)?(?: written=\d+)?/g, (_m, hit, read) => `shared=${Number(hit) + Number(read ?? 0)}`)
    .replace(/shared read=(\d+)(?: dirtied=\d+)?(?: written=\d+)?/g, (_m, read) => `shared=${read}`)
    .replace(/\n\s*Buffers: shared dirtied=\d+( written=\d+)?/g, '')
    .replace(/WAL: [^\n]*/g, 'WAL')
}

export interface Leak {
  context: AttackContext
  settings: string
  probe: string
  /** what the app role saw with B's value, and with the value nobody holds */
  held: string
  unheld: string
}

/**
 * Runs every probe of `columns` in `context` under every planner setting, as the app role (at
 * `appUrl`); returns the observations that differ with B's value from those without (none: no
 * side channel). `limit` stops after that many leaks.
 */
export async function attack(appUrl: string, columns: ProbeColumn[], context: AttackContext, { limit = 5 } = {}): Promise<Leak[]> {
  const client = await connectClient({ connectionString: appUrl })
  const leaks: Leak[] = []
  try {
    const relations = await relationsOf(client, [...new Set(columns.map((c) => c.table))])
    // One statement list for every setting: each probe as EXPLAIN, and its counters around the query itself.
    const probes: { probe: string; value: 'held' | 'unheld'; literals: string[]; counters: boolean; sql: string }[] = []
    for (const c of columns) {
      for (const which of ['held', 'unheld'] as const) {
        for (const { sql: condition, literals } of conditions(c, c[which])) {
          const probe = `${c.table}.${c.column}: ${placeholders(condition, literals, { everywhere: true })}`
          const query = `select * from "${c.table}" where ${condition}`
          const counters = `select ${relations.get(c.table)!.map((oid) => `pg_stat_get_xact_numscans(${oid}) || '/' || pg_stat_get_xact_tuples_returned(${oid}) || '/' || pg_stat_get_xact_tuples_fetched(${oid}) || '/' || pg_stat_get_xact_blocks_fetched(${oid})`).join(` || ' ' || `)} as c`
          probes.push({ probe, value: which, literals, counters: false, sql: `explain (analyze, buffers, verbose, settings, wal, costs, timing off, summary off) ${query};` })
          probes.push({ probe: `${probe} [counters]`, value: which, literals, counters: true, sql: `${counters}; select count(*) from (${query}) q; ${counters};` })
        }
      }
    }
    for (const { sql: settings, counted } of PLANNER_SETTINGS) {
      const batch = probes.filter((p) => !p.counters || counted)
      await enter(client, context)
      try {
        // JIT off: plans the scan settings make dear (a disabled scan costs 1e10) would be compiled,
        // 150 ms each; what JIT does depends on the plan, never on the rows.
        await client.query(`${settings} set local jit = off;`)
        // The EXPLAINs once first, unread: planning fills the catalog caches, which EXPLAIN counts in
        // its planning buffers, for whichever probe comes first. (The data was vacuumed: no probe
        // sets hint bits or prunes a page that another then finds done.)
        await client.query(batch.filter((p) => !p.counters).map((p) => p.sql).join('\n'))
        const results = [await client.query(batch.map((p) => p.sql).join('\n'))].flat() as pg.QueryResult[]
        const seen = new Map<string, { held?: string; unheld?: string }>()
        let at = 0
        for (const p of batch) {
          const text = p.counters
            ? `${counterDelta(String(results[at]!.rows[0].c), String(results[at + 2]!.rows[0].c))} rows=${results[at + 1]!.rows[0].count}`
            : results[at]!.rows.map((r) => r['QUERY PLAN']).join('\n')
          at += p.counters ? 3 : 1
          const entry = seen.get(p.probe) ?? {}
          entry[p.value] = normalized(text, p.literals)
          seen.set(p.probe, entry)
        }
        for (const [probe, { held, unheld }] of seen) {
          if (held !== unheld) leaks.push({ context, settings, probe, held: held!, unheld: unheld! })
          if (leaks.length >= limit) return leaks
        }
      } finally {
        await client.query('rollback')
      }
    }
    return leaks
  } finally {
    await client.end()
  }
}

/** The oids of a table and of each of its indexes, by table. */
async function relationsOf(client: pg.Client, tables: string[]): Promise<Map<string, number[]>> {
  const { rows } = await client.query<{ table: string; oids: number[] }>(`
    select c.relname as table, array[c.oid::int] || array(select i.indexrelid::int from pg_index i where i.indrelid = c.oid order by 1) as oids
    from pg_class c where c.relnamespace = 'public'::regnamespace and c.relname = any($1)`, [tables])
  return new Map(rows.map((r) => [r.table, r.oids]))
}

/** Per relation, the counters' change: scans/tuples returned/tuples fetched/blocks. */
function counterDelta(before: string, after: string): string {
  const b = before.split(' ').map((x) => x.split('/').map(Number))
  const a = after.split(' ').map((x) => x.split('/').map(Number))
  return a.map((rel, i) => rel.map((n, j) => n - b[i]![j]!).join('/')).join(' ')
}
