import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { sql, type Kysely } from 'kysely'
import { afterAll, describe, expect, inject, it } from 'vitest'
import { recordAudit } from '../src/audit/record-audit.ts'
import { verifyAuditTrail, type AuditReport } from '../src/audit/verify-audit.ts'
import type { DB } from '../src/db-types.ts'
import { withTenant } from '../src/tenancy/with-tenant.ts'
import { runScript } from './support/cli.ts'
import { createTestDatabase, type TestDatabase } from './support/database.ts'
import { TEST_AUDIT_KEY } from './support/tenant-key.ts'
import { A, B, NOT_THE_OLD_APP } from './support/tenants.ts'

/**
 * The audit trail is a hash chain per tenant, whose rows the app signs with a key the database never
 * sees (0011): `skills-db audit verify` names the first row that was changed, removed, inserted out of
 * order or backdated, whoever did it (the owner, or a superuser with the triggers off), and what
 * was done to the tables themselves.
 */
const dbs: TestDatabase[] = []
const dirs: string[] = []
afterAll(async () => {
  await Promise.all(dbs.map((d) => d.close()))
  dirs.forEach((d) => rmSync(d, { recursive: true, force: true }))
})

/** A database with tenants A and B and a few audit events each, written through recordAudit. */
async function trail(): Promise<{ t: TestDatabase; app: Kysely<DB>; owner: Kysely<any> }> {
  const t = await createTestDatabase('migrated')
  dbs.push(t)
  await sql.raw(`${NOT_THE_OLD_APP} insert into tenants (id, name, slug) values ('${A}', 'A', 'a'), ('${B}', 'B', 'b');
    insert into users (id, tenant_id, email) values ('uA1', '${A}', 'ann@a'), ('uB1', '${B}', 'bo@b')`).execute(t.admin)
  const app = t.connectAs(inject('appRole'), 'test', 2)
  for (const [tenant, actor] of [[A, 'uA1'], [B, 'uB1']] as const) {
    for (const action of ['login', 'skill.publish', 'payroll.export']) {
      await withTenant(app, tenant, (trx) => recordAudit(trx, { actorId: actor, action, resourceType: 'skill', metadata: { by: actor, n: action.length } }))
    }
  }
  return { t, app, owner: t.connectAs(inject('ownerRole'), 'test', 1) as Kysely<any> }
}

const verify = (t: TestDatabase) => verifyAuditTrail(t.admin, { keys: [TEST_AUDIT_KEY] })
const first = (report: AuditReport, kind?: string) => report.problems.find((p) => kind === undefined || p.kind === kind)
/** B's audit row with this seq (the seed's row is before the chain: B's chained rows are 1, 2, 3). */
const rowOfB = async (t: TestDatabase, seq: number) =>
  (await sql<{ id: string }>`select id from audit_logs where tenant_id = ${B} and seq = ${seq}`.execute(t.admin)).rows[0]!.id

describe('the audit hash chain', () => {
  it('recordAudit links each tenant\'s rows in order and signs them; verification finds nothing to report, from the CLI too', async () => {
    const { t } = await trail()
    const { rows } = await sql<{ row: string; linked: boolean; signed: boolean }>`
      select a.tenant_id || ':' || a.seq as row, coalesce(a.prev_hash = p.row_hash, false) as linked, s.signature is not null as signed
      from audit_logs a left join audit_logs p on p.tenant_id = a.tenant_id and p.seq = a.seq - 1
        left join audit_signatures s on s.tenant_id = a.tenant_id and s.seq = a.seq
      order by a.tenant_id, a.seq`.execute(t.admin)
    expect(rows).toEqual([`${A}:1`, `${A}:2`, `${A}:3`, `${B}:1`, `${B}:2`, `${B}:3`].map((row) => ({ row, linked: !row.endsWith(':1'), signed: true })))
    const report = await verify(t)
    expect(report.problems).toEqual([])
    expect(report.tenants.map((x) => [x.tenantId, x.rows])).toEqual([[A, 3], [B, 3]])
    const dir = mkdtempSync(path.join(tmpdir(), 'skills-db-audit-'))
    dirs.push(dir)
    const cli = await runScript(['audit', 'verify', '--save-heads', path.join(dir, 'heads.json')], { DATABASE_URL: t.url, SKILLS_DB_AUDIT_KEYS: TEST_AUDIT_KEY })
    expect(cli.code, cli.stderr).toBe(0)
    expect(cli.stdout).toMatch(/audit trail verified: 2 tenant\(s\) with an audit trail, 6 chained row\(s\), every one signed and in order/)
    expect(JSON.parse(readFileSync(path.join(dir, 'heads.json'), 'utf8'))).toEqual([
      { tenantId: A, seq: '3', rowHash: expect.stringMatching(/^[0-9a-f]{64}$/) }, { tenantId: B, seq: '3', rowHash: expect.stringMatching(/^[0-9a-f]{64}$/) }])
  })

  it('appends of different tenants do not wait for each other; a tenant\'s next append waits for its previous one', async () => {
    const { t } = await trail()
    const a1 = t.connectAs(inject('appRole'), 'test', 1)
    const a2 = t.connectAs(inject('appRole'), 'test', 1)
    const b = t.connectAs(inject('appRole'), 'test', 1)
    let release!: () => void
    const held = new Promise<void>((r) => (release = r))
    let appended!: () => void
    const hasAppended = new Promise<void>((r) => (appended = r))
    const first = withTenant(a1, A, async (trx) => {
      await recordAudit(trx, { actorId: null, action: 'long.request' })
      appended()
      await held
    })
    await hasAppended
    const started = Date.now()
    await withTenant(b, B, (trx) => recordAudit(trx, { actorId: null, action: 'meanwhile' }))
    expect(Date.now() - started).toBeLessThan(2_000)
    await expect(withTenant(a2, A, async (trx) => {
      await sql`set local lock_timeout = '300ms'`.execute(trx)
      await recordAudit(trx, { actorId: null, action: 'waits' })
    })).rejects.toThrow(/lock timeout/)
    release()
    await first
    expect(await withTenant(a2, A, (trx) => recordAudit(trx, { actorId: null, action: 'after' }))).toMatch(/^[0-9a-f-]{36}$/)
    expect((await verify(t)).problems).toEqual([])
  })

  it('the owner rewriting B\'s rows in place (ALTER COLUMN … TYPE … USING): the first rewritten row, and the changed column type', async () => {
    const { t, owner } = await trail()
    await sql.raw(`alter table audit_logs alter column action type varchar using (case when tenant_id = '${B}' and action = 'skill.publish' then 'skill.view' else action end)`).execute(owner)
    const report = await verify(t)
    expect(first(report, 'changed')).toMatchObject({ tenantId: B, rowId: await rowOfB(t, 2), message: expect.stringMatching(/was changed after it was written/) })
  })

  it('the owner silently dropping new rows with a rule: recordAudit fails loudly, and verification names the rule', async () => {
    const { t, app, owner } = await trail()
    await sql`create rule drop_new_rows as on insert to audit_logs do instead nothing`.execute(owner)
    // (PostgreSQL refuses the RETURNING such a rule leaves nothing for; one that returned nothing would be AuditError's.)
    await expect(withTenant(app, A, (trx) => recordAudit(trx, { actorId: null, action: 'lost' }))).rejects.toThrow(/cannot perform INSERT RETURNING on relation "audit_logs"|audit row was not written/)
    expect(first(await verify(t), 'schema')).toMatchObject({ message: expect.stringMatching(/audit_logs: rules drop_new_rows rewrite what is written to it/) })
  })

  it('a trigger of the owner\'s that fires after ours and backdates new rows: recordAudit refuses to sign, verification names the row and the trigger', async () => {
    const { t, app, owner } = await trail()
    await sql.raw(`create function skills_db.backdate() returns trigger language plpgsql as $$ begin new.created_at := '2020-01-01'; return new; end $$;
      create trigger zz_backdate before insert on audit_logs for each row execute function skills_db.backdate()`).execute(owner)
    await expect(withTenant(app, A, (trx) => recordAudit(trx, { actorId: null, action: 'backdated' }))).rejects.toThrow(/another audit row than the one written/)
    // Written another way (the superuser, no signature): the row does not hash to what it says.
    await sql`insert into audit_logs (tenant_id, action) values (${B}, 'backdated')`.execute(t.admin)
    const report = await verify(t)
    expect(first(report, 'schema')).toMatchObject({ message: expect.stringMatching(/audit_logs: its triggers are not skills-db's.*unexpected zz_backdate/) })
    expect(first(report, 'changed')).toMatchObject({ tenantId: B, rowId: await rowOfB(t, 4) })
  })

  it('unlogged (a crash would empty it): refused while the signatures reference it; both made unlogged, verification names them', async () => {
    const { t, owner } = await trail()
    await expect(sql`alter table audit_logs set unlogged`.execute(owner)).rejects.toThrow(/referenced by logged table "audit_signatures"|could not change table/)
    await sql`alter table audit_signatures set unlogged`.execute(owner)
    await sql`alter table audit_logs set unlogged`.execute(owner)
    const report = await verify(t)
    expect(report.problems.filter((p) => p.kind === 'schema').map((p) => p.message)).toEqual([
      expect.stringMatching(/^audit_logs: it is UNLOGGED/), expect.stringMatching(/^audit_signatures: it is UNLOGGED/)])
  })

  it('a restrictive policy that hides B\'s rows from B: verification names it', async () => {
    const { t, app, owner } = await trail()
    await sql.raw(`create policy hide on audit_logs as restrictive for select to ${inject('appRole')} using (action <> 'payroll.export')`).execute(owner)
    expect(await withTenant(app, B, (trx) => trx.selectFrom('audit_logs').select('action').where('seq', 'is not', null).orderBy('seq').execute())).toHaveLength(2)
    expect(first(await verify(t), 'schema')).toMatchObject({ message: expect.stringMatching(/audit_logs: policies that are not skills-db's: hide:restrictive/) })
  })

  it('a superuser who turns the triggers off and deletes a row of B\'s: the gap is named', async () => {
    const { t } = await trail()
    await sql.raw(`alter table audit_logs disable trigger all; alter table audit_signatures disable trigger all;
      delete from audit_signatures where tenant_id = '${B}' and seq = 2; delete from audit_logs where tenant_id = '${B}' and seq = 2;
      alter table audit_logs enable always trigger no_update_or_delete, enable always trigger no_truncate, enable always trigger stamp, enable always trigger actor_of_own_tenant;
      alter table audit_signatures enable always trigger no_update_or_delete, enable always trigger no_truncate`).execute(t.admin)
    expect(first(await verify(t), 'deleted')).toMatchObject({ tenantId: B, rowId: await rowOfB(t, 3), message: expect.stringMatching(/rows 2 of the chain are missing before row .* \(seq 3\): removed/) })
  })

  it('a superuser who removes B\'s last row: the head names it; removed with the head rewritten too, the heads saved earlier do', async () => {
    const { t } = await trail()
    const saved = (await verify(t)).tenants.map((x) => x.head!)
    const off = `alter table audit_logs disable trigger no_update_or_delete; alter table audit_signatures disable trigger no_update_or_delete;`
    const on = `alter table audit_logs enable always trigger no_update_or_delete; alter table audit_signatures enable always trigger no_update_or_delete;`
    await sql.raw(`${off} delete from audit_signatures where tenant_id = '${B}' and seq = 3; delete from audit_logs where tenant_id = '${B}' and seq = 3; ${on}`).execute(t.admin)
    expect(first(await verify(t), 'truncated')).toMatchObject({ tenantId: B, message: expect.stringMatching(/the chain's head is at seq 3, its last row at seq 2: the rows after it were removed/) })
    await sql`update skills_db.audit_chain_heads h set seq = 2, row_hash = a.row_hash from audit_logs a where h.tenant_id = ${B} and a.tenant_id = h.tenant_id and a.seq = 2`.execute(t.admin)
    expect((await verify(t)).problems).toEqual([])
    const report = await verifyAuditTrail(t.admin, { keys: [TEST_AUDIT_KEY], expectedHeads: saved })
    expect(first(report, 'truncated')).toMatchObject({ tenantId: B, seq: '3', message: expect.stringMatching(/no longer holds seq 3 .* rows up to it were removed since/) })
  })

  it('a superuser who changes a row and recomputes the chain after it: the app\'s signatures no longer match', async () => {
    const { t } = await trail()
    // Everything the database could do itself: the row changed, its hash and every later one's recomputed, the head moved.
    await sql.raw(`alter table audit_logs disable trigger no_update_or_delete;
      update audit_logs set action = 'skill.view' where tenant_id = '${B}' and seq = 2;
      update audit_logs a set row_hash = sha256(a.prev_hash || convert_to('skills-db audit v1' || skills_db.audit_field(a.id::text) || skills_db.audit_field(a.tenant_id)
          || skills_db.audit_field(a.seq::text) || skills_db.audit_field(((extract(epoch from a.created_at) * 1000000)::bigint)::text) || skills_db.audit_field(a.actor_id)
          || skills_db.audit_field(a.action) || skills_db.audit_field(a.resource_type) || skills_db.audit_field(a.resource_id) || skills_db.audit_field(a.ip_address)
          || skills_db.audit_field(a.metadata::text), 'UTF8')) where tenant_id = '${B}' and seq = 2;
      update audit_logs a set prev_hash = p.row_hash from audit_logs p where a.tenant_id = '${B}' and p.tenant_id = a.tenant_id and a.seq = 3 and p.seq = 2;
      update audit_logs a set row_hash = sha256(a.prev_hash || convert_to('skills-db audit v1' || skills_db.audit_field(a.id::text) || skills_db.audit_field(a.tenant_id)
          || skills_db.audit_field(a.seq::text) || skills_db.audit_field(((extract(epoch from a.created_at) * 1000000)::bigint)::text) || skills_db.audit_field(a.actor_id)
          || skills_db.audit_field(a.action) || skills_db.audit_field(a.resource_type) || skills_db.audit_field(a.resource_id) || skills_db.audit_field(a.ip_address)
          || skills_db.audit_field(a.metadata::text), 'UTF8')) where tenant_id = '${B}' and seq = 3;
      update skills_db.audit_chain_heads h set row_hash = a.row_hash from audit_logs a where h.tenant_id = '${B}' and a.tenant_id = h.tenant_id and a.seq = 3;
      alter table audit_logs enable always trigger no_update_or_delete`).execute(t.admin)
    expect(first(await verify(t), 'bad-signature')).toMatchObject({ tenantId: B, rowId: await rowOfB(t, 2), message: expect.stringMatching(/its signature does not match: the row, or its signature, was changed/) })
  })

  it('a row inserted with the chain\'s trigger off, or by the owner without the app: named as not in the chain, or not signed', async () => {
    const { t, owner } = await trail()
    await sql.raw(`alter table audit_logs disable trigger stamp; insert into audit_logs (id, tenant_id, action) values (gen_random_uuid(), '${A}', 'forged');
      insert into audit_logs (id, tenant_id, action, created_at) values (gen_random_uuid(), '${B}', 'forged', now() - interval '1 year');
      alter table audit_logs enable always trigger stamp`).execute(t.admin)
    const report = await verify(t)
    expect(report.problems.find((p) => p.tenantId === A)).toMatchObject({ kind: 'outside-chain', message: expect.stringMatching(/has no place in the chain but was written after it began/) })
    // Dated before the chain, it changes the digest of the rows before it, which the chain's first row links to.
    expect(report.problems.find((p) => p.tenantId === B)).toMatchObject({ kind: 'out-of-order', seq: '1', message: expect.stringMatching(/does not follow the anchor of the rows written before the chain \(one of those was changed, removed or added\)/) })
    const other = await trail()
    // The owner, through the chain's own trigger (its view of every tenant: as the migrator has it), with no signature.
    await sql`insert into audit_logs (tenant_id, action) values (${B}, 'by the owner')`.execute(other.t.admin)
    expect(first(await verify(other.t))).toMatchObject({ tenantId: B, kind: 'unsigned', message: expect.stringMatching(/is not signed: written outside recordAudit, or its signature was removed/) })
    void owner
  })

  it('SQL of the app role in A that signs its own row with a time no clock gives (infinity): that row is named, and B is still verified (its changed row named)', async () => {
    const { t, app } = await trail()
    await withTenant(app, A, async (trx) => {
      const { rows } = await sql<{ seq: string }>`insert into audit_logs (action) values ('x') returning seq::text as seq`.execute(trx)
      await sql`insert into audit_signatures (seq, key_id, signature, signed_at) values (${rows[0]!.seq}::bigint, 'audit', 'x', 'infinity')`.execute(trx)
    })
    await sql.raw(`alter table audit_logs disable trigger no_update_or_delete; update audit_logs set ip_address = '10.0.0.66' where tenant_id = '${B}' and seq = 2;
      alter table audit_logs enable always trigger no_update_or_delete`).execute(t.admin)
    const report = await verify(t)
    expect(report.problems.map((p) => [p.tenantId, p.kind, p.seq])).toEqual([[A, 'bad-signature', '4'], [B, 'changed', '2']])
    expect(first(report, 'bad-signature')!.message).toMatch(/its signature is dated .*which no app clock gives: forged/)
    const cli = await runScript(['audit', 'verify'], { DATABASE_URL: t.url, SKILLS_DB_AUDIT_KEYS: TEST_AUDIT_KEY })
    expect(cli.code).toBe(1)
    expect(cli.stderr).toMatch(/bad-signature: tenant .* \(seq 4\)/)
    expect(cli.stderr).toMatch(new RegExp(`changed: tenant ${B}: row ${await rowOfB(t, 2)} \\(seq 2\\)`))
  })

  it('the CLI: exit 1, the first bad row named; a key it was not given, no key at all, and an unknown tenant are said so', async () => {
    const { t } = await trail()
    await sql.raw(`alter table audit_logs disable trigger no_update_or_delete; update audit_logs set ip_address = '10.0.0.66' where tenant_id = '${B}' and seq = 1;
      alter table audit_logs enable always trigger no_update_or_delete`).execute(t.admin)
    const bad = await runScript(['audit', 'verify'], { DATABASE_URL: t.url, SKILLS_DB_AUDIT_KEYS: TEST_AUDIT_KEY })
    expect(bad.code).toBe(1)
    expect(bad.stderr).toMatch(new RegExp(`changed: tenant ${B}: row ${await rowOfB(t, 1)} \\(seq 1\\) was changed after it was written`))
    expect(bad.stderr).toMatch(/^error: the audit trail fails verification: 1 problem\(s\)/m)
    // B's count stops before the row that fails: it does not claim rows it could not verify.
    expect(bad.stdout).toMatch(new RegExp(`^  tenant ${B}: 0 row\\(s\\) in order before its first problem \\(below\\)`, 'm'))
    const other = await runScript(['audit', 'verify', '--tenant', A], { DATABASE_URL: t.url, SKILLS_DB_AUDIT_KEYS: 'other:0123456789abcdef0123456789abcdef-other' })
    expect(other.code).toBe(1)
    expect(other.stderr).toMatch(/signed with audit key "audit", which was not given to the verification/)
    const none = await runScript(['audit', 'verify'], { DATABASE_URL: t.url, SKILLS_DB_AUDIT_KEYS: '', SKILLS_DB_AUDIT_KEY: '' })
    expect(none.code).toBe(1)
    expect(none.stderr.trim()).toMatch(/^error: audit verify needs the audit key\(s\) the app signs with: set SKILLS_DB_AUDIT_KEYS/)
    // A mistyped tenant verifies nothing: refused, not passed.
    const typo = await runScript(['audit', 'verify', '--tenant', 'no-such-tenant'], { DATABASE_URL: t.url, SKILLS_DB_AUDIT_KEYS: TEST_AUDIT_KEY })
    expect(typo.code).toBe(1)
    expect(typo.stderr.trim()).toMatch(/^error: no tenant has the id "no-such-tenant": pass a tenant's id/)
  })

  it('recordAudit without an audit key refuses, and says what to set', async () => {
    const { t } = await trail()
    const app = t.connectAs(inject('appRole'), 'test', 1)
    const was = process.env.SKILLS_DB_AUDIT_KEY
    delete process.env.SKILLS_DB_AUDIT_KEY
    try {
      await expect(withTenant(app, A, (trx) => recordAudit(trx, { actorId: null, action: 'x' }))).rejects.toThrow(/recordAudit has no audit key: pass createDb\(url, \{ auditKey \}\) or set SKILLS_DB_AUDIT_KEY/)
    } finally {
      process.env.SKILLS_DB_AUDIT_KEY = was
    }
  })
})
