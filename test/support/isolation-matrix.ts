import { sql, type Kysely } from 'kysely'
import { describe, expect, it } from 'vitest'
import type { DB } from '../../src/db-types.ts'
import { A, attempt, B, rowSecurityRefusal, tenantSeen, type TenantContext } from './tenants.ts'

type Table = keyof DB & string

/** Per table: a row of tenant A, a harmless column to update, and a new row's values (tenant A's references). */
const TABLES: { table: Table; rowOfA: string; idColumn: string; set: Record<string, unknown>; insert: Record<string, unknown> }[] = [
  { table: 'users', rowOfA: 'uA2', idColumn: 'id', set: { name: 'x' }, insert: { id: 'uA9', email: 'new@a' } },
  { table: 'skills', rowOfA: 'sA2', idColumn: 'id', set: { name: 'x' }, insert: { id: 'sA9', name: 'n', slug: 'new', description: 'd', category: 'c', content: 'c', author_id: 'uA1' } },
  { table: 'ratings', rowOfA: 'rA1', idColumn: 'id', set: { comment: 'x' }, insert: { id: 'rA9', skill_id: 'sA2', user_id: 'uA1', rating: 1 } },
  { table: 'usage_events', rowOfA: 'eA1', idColumn: 'id', set: { tool_name: 'x' }, insert: { id: 'eA9', tool_name: 't', skill_id: 'sA1', user_id: 'uA1' } },
  { table: 'skill_versions', rowOfA: 'vA1', idColumn: 'id', set: { name: 'x' }, insert: { id: 'vA9', skill_id: 'sA1', version: 9, content_url: 'u', content_hash: 'h', content_type: 't', name: 'n', description: 'd', created_by: 'uA1' } },
  { table: 'skill_embeddings', rowOfA: 'mA1', idColumn: 'id', set: { model_name: 'x' }, insert: { id: 'mA9', skill_id: 'sA2', embedding: [1], model_name: 'm', model_version: '1', input_hash: 'i' } },
  { table: 'skill_reviews', rowOfA: 'wA1', idColumn: 'id', set: { summary: 'x' }, insert: { id: 'wA9', skill_id: 'sA2', requested_by: 'uA1', categories: '{}', summary: 's', reviewed_content_hash: 'h', model_name: 'm' } },
  { table: 'api_keys', rowOfA: 'kA1', idColumn: 'id', set: { name: 'x' }, insert: { id: 'kA9', user_id: 'uA1', key_hash: 'hash-new', key_prefix: 'p', name: 'n' } },
  { table: 'site_settings', rowOfA: 'model-a', idColumn: 'ollama_model', set: { ollama_model: 'model-a' }, insert: { id: 'other' } },
  { table: 'audit_logs', rowOfA: 'seed', idColumn: 'action', set: { action: 'x' }, insert: { action: 'new' } },
]

const CONTEXTS: [string, TenantContext][] = [
  ['own tenant', { kind: 'tenant', id: A }],
  ['other tenant', { kind: 'tenant', id: B }],
  ['tenant A named in the setting, not entered', { kind: 'named', id: A }],
  ['no tenant', { kind: 'none' }],
  ['empty tenant', { kind: 'empty' }],
  // Switches inside one transaction, after a real entry (so the entered flag is on and this
  // session's mark exists): forged ones fail closed, one made with the key is the new tenant's.
  ['tenant A entered, then tenant B named in the setting', { kind: 'switched', from: A, to: { kind: 'named', id: B } }],
  ['tenant B entered, then tenant A named in the setting', { kind: 'switched', from: B, to: { kind: 'named', id: A } }],
  ['tenant A entered, then the setting emptied', { kind: 'switched', from: A, to: { kind: 'empty' } }],
  ['tenant A entered, then the entered flag turned off', { kind: 'switched', from: A, to: { kind: 'unflagged' } }],
  ['tenant A entered, then tenant B entered with the key', { kind: 'switched', from: A, to: { kind: 'tenant', id: B } }],
  ['tenant B entered, then tenant A entered with the key', { kind: 'switched', from: B, to: { kind: 'tenant', id: A } }],
]

export interface MatrixOptions {
  /** The application role's name, which `app()` logs in as. */
  role: () => string
  /**
   * On Citus the row security error comes from a worker and names the shard
   * (`"users_102008"`), not the table: docs/app.md, "What an app changes on Citus", tells apps so.
   */
  shardNames?: boolean
  /**
   * On distributed tables Citus refuses some writes before row security sees them: an INSERT whose
   * tenant_id is NULL (22004: no shard for it), an UPDATE of tenant_id (0A000). Those refusals are
   * accepted in place of row security's; a success never is.
   */
  citus?: boolean
}

/**
 * The isolation matrix: every table × every tenant context × SELECT, INSERT, UPDATE, DELETE, as the
 * application role (`app()`, a connection of it), on a database seeded with seedTwoTenants. Used
 * on the expand schema, on the contracted one, and on Citus, so each shows the same isolation.
 */
export function describeIsolationMatrix(app: () => Kysely<DB>, options: MatrixOptions): void {
  const refused = (table: string) => rowSecurityRefusal(table, options)
  // On Citus the workers check the tenant context that enter() propagated (SET LOCAL), and a
  // set_config() after it does not reach them, while the coordinator plans with the setting it
  // sees: a context tampered with that way answers for the tenant entered or for none, a shard
  // at a time (docs/citus.md, "Measured on the test clusters", says so). Never for another
  // tenant: that is what these cases then check.
  const expectRefused = (r: Awaited<ReturnType<typeof attempt>>, table: string, citusCode: '22004' | '0A000') => {
    if (options.citus && !r.ok && r.error.code === citusCode) return
    expect(r).toMatchObject({ ok: false, error: { code: '42501', message: refused(table) } })
  }
  const tampered = (context: TenantContext): string | undefined =>
    options.citus && context.kind === 'switched' && context.to.kind !== 'tenant' ? context.from : undefined

  it('the application role is neither superuser, nor BYPASSRLS, nor owner of anything', async () => {
    const { rows } = await sql<{ rolsuper: boolean; rolbypassrls: boolean; owns: number; me: string }>`
      select r.rolsuper, r.rolbypassrls, current_user as me,
        (select count(*)::int from pg_class where relowner = r.oid) + (select count(*)::int from pg_proc where proowner = r.oid) as owns
      from pg_roles r where r.rolname = current_user`.execute(app())
    expect(rows[0]).toEqual({ rolsuper: false, rolbypassrls: false, owns: 0, me: options.role() })
  })

  describe.each(TABLES.map((x) => [x.table, x] as const))('%s', (_name, { table, rowOfA, idColumn, set, insert }) => {
    const isAudit = table === 'audit_logs'

    it.each(CONTEXTS)('SELECT in %s', async (_label, context) => {
      const r = await attempt(app(), context, (trx) => trx.selectFrom(table).select(sql<string>`tenant_id`.as('tenant_id')).execute())
      expect(r.ok).toBe(true)
      const tenants = r.ok ? [...new Set(r.value.map((x) => x.tenant_id))] : []
      const entered = tampered(context)
      if (entered) return expect([[], [entered]]).toContainEqual(tenants)
      const seen = tenantSeen(context)
      expect(tenants).toEqual(seen === undefined ? [] : [seen])
    })

    it.each(CONTEXTS)('INSERT in %s', async (_label, context) => {
      const r = await attempt(app(), context, (trx) =>
        trx.insertInto(table).values(insert as never).returning(sql<string>`tenant_id`.as('tenant_id')).executeTakeFirstOrThrow())
      const entered = tampered(context)
      if (entered) return expect(r.ok ? r.value.tenant_id : 'refused').toBeOneOf([entered, 'refused'])
      const seen = tenantSeen(context)
      if (seen === A) {
        expect(r).toEqual({ ok: true, value: { tenant_id: A } })
      } else if (seen === B) {
        // Tenant B cannot write rows that point at A's rows (audit rows have none, and land in B).
        if (isAudit) expect(r).toEqual({ ok: true, value: { tenant_id: B } })
        else if (table === 'users' || table === 'site_settings') expect(r).toEqual({ ok: true, value: { tenant_id: B } })
        else expect(r).toMatchObject({ ok: false, error: { code: '23503' } })
      } else {
        expectRefused(r, table, '22004')
      }
    })

    it.each(CONTEXTS)('INSERT of a row labelled with tenant A, in %s', async (_label, context) => {
      const r = await attempt(app(), context, (trx) => trx.insertInto(table).values({ ...insert, tenant_id: A } as never).execute())
      const entered = tampered(context)
      if (entered) return expect(r.ok).toBe(r.ok && entered === A)
      if (tenantSeen(context) === A) expect(r.ok).toBe(true)
      else expect(r).toMatchObject({ ok: false, error: { code: '42501', message: refused(table) } })
    })

    it.each(CONTEXTS)('UPDATE of a row of tenant A in %s', async (_label, context) => {
      const r = await attempt(app(), context, (trx) =>
        trx.updateTable(table).set(set as never).where(sql.ref(idColumn), '=', rowOfA).executeTakeFirst())
      if (isAudit) return expect(r).toMatchObject({ ok: false, error: { code: '42501', message: 'permission denied for table audit_logs' } })
      expect(r.ok).toBe(true)
      const entered = tampered(context)
      if (entered) return expect(r.ok && Number(r.value.numUpdatedRows)).toBeOneOf(entered === A ? [0, 1] : [0])
      expect(r.ok && Number(r.value.numUpdatedRows)).toBe(tenantSeen(context) === A ? 1 : 0)
    })

    it.each(CONTEXTS)('DELETE of a row of tenant A in %s', async (_label, context) => {
      const r = await attempt(app(), context, (trx) => trx.deleteFrom(table).where(sql.ref(idColumn), '=', rowOfA).executeTakeFirst())
      if (isAudit) return expect(r).toMatchObject({ ok: false, error: { code: '42501', message: 'permission denied for table audit_logs' } })
      expect(r.ok).toBe(true)
      const entered = tampered(context)
      if (entered) return expect(r.ok && Number(r.value.numDeletedRows)).toBeOneOf(entered === A ? [0, 1] : [0])
      expect(r.ok && Number(r.value.numDeletedRows)).toBe(tenantSeen(context) === A ? 1 : 0)
    })

    it('UPDATE cannot move a row of tenant A into tenant B', async () => {
      const r = await attempt(app(), { kind: 'tenant', id: A }, (trx) =>
        trx.updateTable(table).set({ tenant_id: B } as never).where(sql.ref(idColumn), '=', rowOfA).execute())
      if (isAudit && !(options.citus && !r.ok && r.error.code === '0A000')) expect(r).toMatchObject({ ok: false, error: { code: '42501', message: 'permission denied for table audit_logs' } })
      else if (!isAudit) expectRefused(r, table, '0A000')
    })
  })

  it('tenants: a tenant reads its own row only, none without a tenant, and writes nothing', async () => {
    const read = await attempt(app(), { kind: 'tenant', id: A }, (trx) => trx.selectFrom('tenants').select('slug').execute())
    expect(read.ok && read.value.map((r) => r.slug)).toEqual(['a'])
    const none = await attempt(app(), { kind: 'none' }, (trx) => trx.selectFrom('tenants').select('slug').execute())
    expect(none).toEqual({ ok: true, value: [] })
    for (const write of [
      (trx: any) => trx.insertInto('tenants').values({ name: 'x', slug: 'x' }).execute(),
      (trx: any) => trx.updateTable('tenants').set({ name: 'x' }).execute(),
      (trx: any) => trx.deleteFrom('tenants').execute(),
    ]) {
      expect(await attempt(app(), { kind: 'tenant', id: A }, write)).toMatchObject({ ok: false, error: { code: '42501', message: 'permission denied for table tenants' } })
    }
  })
}
