import { sql, type Kysely } from 'kysely'
import { beforeAll, describe, expect, inject, it } from 'vitest'
import { recordAudit } from '../src/audit/record-audit.ts'
import { createDb } from '../src/connection/create-db.ts'
import type { DB } from '../src/db-types.ts'
import { resolveApiKey } from '../src/tenancy/resolve-api-key.ts'
import { TenantError, withTenant } from '../src/tenancy/with-tenant.ts'
import { useTestDatabase } from './support/database.ts'
import { A, B, NOT_THE_OLD_APP, seedTwoTenants } from './support/tenants.ts'

describe('the audit log is append-only for everyone, and says only what the database vouches for', () => {
  const t = useTestDatabase('migrated')
  let app: Kysely<DB>
  beforeAll(async () => {
    await seedTwoTenants(t.admin)
    app = t.connectAs(inject('appRole'))
  })

  it.each([
    ['DELETE', sql`delete from audit_logs`],
    ['UPDATE', sql`update audit_logs set action = 'rewritten'`],
    // With the signatures that reference it: the trigger, not the foreign key, must be what stops it.
    ['TRUNCATE', sql`truncate audit_logs, audit_signatures`],
  ])('a superuser in replica mode (which skips ordinary triggers) cannot %s it', async (_label, statement) => {
    await expect(t.admin.connection().execute(async (conn) => {
      await sql`set session_replication_role = replica`.execute(conn)
      try {
        await statement.execute(conn)
      } finally {
        await sql`reset session_replication_role`.execute(conn)
      }
    })).rejects.toThrow(/audit_(logs|signatures) is append-only/)
  })

  it('the database assigns id and created_at, whatever the writer says', async () => {
    const row = await withTenant(app, A, (trx) => trx.insertInto('audit_logs')
      .values({ id: '00000000-0000-0000-0000-000000000001', created_at: new Date('2000-01-01T00:00:00Z'), action: 'backdated' } as never)
      .returning(['id', 'created_at']).executeTakeFirstOrThrow())
    expect(row.id).not.toBe('00000000-0000-0000-0000-000000000001')
    expect(new Date(row.created_at as unknown as string).getTime()).toBeGreaterThan(Date.now() - 60_000)
  })

  it('the actor must be a user of the row\'s own tenant, or none', async () => {
    await expect(withTenant(app, A, (trx) => recordAudit(trx, { actorId: 'uB1', action: 'impersonate' })))
      .rejects.toThrow('audit actor uB1 is not a user of tenant tenant-a')
    await expect(withTenant(app, A, (trx) => recordAudit(trx, { actorId: 'nobody', action: 'ghost' }))).rejects.toThrow(/is not a user of tenant/)
    expect(await withTenant(app, A, (trx) => recordAudit(trx, { actorId: 'uA1', action: 'mine' }))).toMatch(/^[0-9a-f-]{36}$/)
    expect(await withTenant(app, A, (trx) => recordAudit(trx, { actorId: null, action: 'system' }))).toMatch(/^[0-9a-f-]{36}$/)
  })

  it('a row without a tenant is refused, even from the superuser', async () => {
    await expect(sql`insert into audit_logs (action) values ('orphan')`.execute(t.admin)).rejects.toThrow(/null value in column "tenant_id"/)
  })
})

describe('tenants: private, and an inactive one is locked out', () => {
  const t = useTestDatabase('migrated')
  let app: Kysely<DB>
  beforeAll(async () => {
    await seedTwoTenants(t.admin)
    app = t.connectAs(inject('appRole'))
  })

  it('without a tenant the app role lists no tenant; with one, only its own', async () => {
    expect(await app.selectFrom('tenants').select('id').execute()).toEqual([])
    expect(await withTenant(app, A, (trx) => trx.selectFrom('tenants').select('id').execute())).toEqual([{ id: A }])
  })

  it('deactivating a tenant locks it out of withTenant and the API-key resolver; reactivating lets it back', async () => {
    await sql.raw(`${NOT_THE_OLD_APP} update tenants set is_active = false where id = '${B}'`).execute(t.admin)
    try {
      await expect(withTenant(app, B, async () => 'in')).rejects.toThrow(`unknown or inactive tenant "${B}"`)
      expect(await resolveApiKey(app, { tenantId: B, keyHash: 'hash-b' })).toBeUndefined()
    } finally {
      await sql`update tenants set is_active = true where id = ${B}`.execute(t.admin)
    }
    expect(await resolveApiKey(app, { tenantId: B, keyHash: 'hash-b' })).toEqual({ tenantId: B, userId: 'uB1' })
    expect(await withTenant(app, B, async () => 'in')).toBe('in')
  })
})

describe('withTenant hands the connection back clean', () => {
  const t = useTestDatabase('migrated')
  let app: Kysely<DB>
  beforeAll(async () => {
    await seedTwoTenants(t.admin)
    // A pool of one: the next caller gets the very session the previous one used.
    app = t.connectAs(inject('appRole'), 'test', 1)
  })

  it('nothing fn left on the session reaches the next user of the connection', async () => {
    // 0012 takes TEMPORARY away from the app role; given back (as an operator might), the clean-up still clears it.
    const { rows: [database] } = await sql<{ db: string }>`select current_database() as db`.execute(t.admin)
    await sql`grant temporary on database ${sql.id(database!.db)} to ${sql.id(inject('appRole'))}`.execute(t.admin)
    await withTenant(app, A, async (trx) => {
      await sql`select set_config('app.current_tenant_id', ${A}, false)`.execute(trx)
      await sql`set statement_timeout = '1s'`.execute(trx)
      await sql`create temp table stash as select id from skills`.execute(trx)
      await sql`declare kept cursor with hold for select id, tenant_id from skills`.execute(trx)
      await sql`prepare peek as select id from skills`.execute(trx)
      await sql`listen tenant_a_events`.execute(trx)
      await sql`select pg_advisory_lock(42)`.execute(trx)
    })
    const { rows } = await sql<Record<string, unknown>>`select
        current_setting('app.current_tenant_id', true) as tenant,
        current_setting('statement_timeout') as timeout,
        (select count(*)::int from pg_class where relnamespace = pg_my_temp_schema()) as temp_tables,
        (select count(*)::int from pg_cursors) as cursors,
        (select count(*)::int from pg_prepared_statements) as prepared,
        (select count(*)::int from pg_listening_channels()) as listening,
        (select count(*)::int from pg_locks where locktype = 'advisory' and pid = pg_backend_pid()) as advisory`.execute(app)
    expect(rows[0]).toEqual({ tenant: '', timeout: '0', temp_tables: 0, cursors: 0, prepared: 0, listening: 0, advisory: 0 })
    expect(await app.selectFrom('skills').select('id').execute()).toEqual([])
    await sql`revoke temporary on database ${sql.id(database!.db)} from ${sql.id(inject('appRole'))}`.execute(t.admin)
  })

  it('a table lock taken in A\'s request (LOCK TABLE, as SQL injected as the app role may) holds B\'s requests up no longer than lockTimeoutMs', async () => {
    const a = t.connectAs(inject('appRole'), 'test', 1)
    const u = new URL(t.url)
    u.username = inject('appRole')
    u.password = 'test'
    const b = createDb<DB>(u.toString(), { max: 1, lockTimeoutMs: 200 })
    let locked!: () => void
    const isLocked = new Promise<void>((r) => (locked = r))
    let release!: () => void
    const held = new Promise<void>((r) => (release = r))
    const attack = withTenant(a, A, async (trx) => {
      await sql`lock table skills in access exclusive mode`.execute(trx)
      locked()
      await held
    })
    try {
      await isLocked
      await expect(withTenant(b, B, (trx) => trx.selectFrom('skills').select('id').execute())).rejects.toMatchObject({ code: '55P03' })
    } finally {
      release()
      await attack
      await b.destroy()
    }
    // And once A's transaction is over, B's next request goes through.
    expect(await withTenant(app, B, (trx) => trx.selectFrom('skills').select('tenant_id').execute())).toEqual([{ tenant_id: B }, { tenant_id: B }])
  })

  it('a nested withTenant fails at once, instead of waiting for a second connection', async () => {
    await expect(withTenant(app, A, () => withTenant(app, B, async () => 'inner')))
      .rejects.toThrow(new TenantError(`withTenant called inside withTenant (tenant "${A}"): use the transaction you were given`))
    // The connection is free again afterwards.
    expect(await withTenant(app, B, async () => 'next')).toBe('next')
  })
})
