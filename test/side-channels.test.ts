import { sql } from 'kysely'
import { beforeAll, describe, expect, inject, it } from 'vitest'
import { migrateContract } from '../src/migrator/migrate.ts'
import { connectClient } from '../src/connection/pg-client.ts'
import { useTestDatabase, type TestDatabase } from './support/database.ts'
import { ATTACK_CONTEXTS, attack, probeColumns, seedSecrets, TENANT_B, type ProbeColumn } from './support/side-channel-probes.ts'

/** The tables the app role reads: every one must be probed. */
const APP_TABLES = ['api_keys', 'audit_logs', 'audit_signatures', 'ratings', 'site_settings', 'skill_embeddings', 'skill_reviews', 'skill_versions', 'skills', 'tenants', 'usage_events', 'users']

function appUrl(t: TestDatabase): string {
  const u = new URL(t.url)
  u.username = inject('appRole')
  u.password = 'test'
  return u.toString()
}

/**
 * The outside review's side-channel attack (test/support/side-channel-probes.ts), as the app role,
 * on the expand schema opened to more tenants and on the contracted one: EXPLAIN (every option,
 * every scan setting, costs as they are and zero), estimates and statistics counters must not
 * depend on whether tenant B holds a value, in any text or key column of any table.
 */
describe.each([
  ['the expand schema, opened to more tenants (skills-db open)', false],
  ['the contracted schema', true],
] as const)('no side channel on %s', (_label, contracted) => {
  const t = useTestDatabase('migrated')
  let columns: ProbeColumn[]
  beforeAll(async () => {
    if (contracted) {
      await sql.raw(`alter database "${t.name}" set timezone to 'UTC'; alter database "${t.name}" owner to "${inject('ownerRole')}"`).execute(t.admin)
      const outcome = await migrateContract(t.connectAs(inject('ownerRole'), 'test', 1), { appRole: inject('appRole'), allowOldAppSessions: true })
      expect(outcome.status === 'error' ? outcome.error.message : outcome.status).toBe('applied')
    }
    await seedSecrets(t.admin)
    columns = await probeColumns(t.admin, inject('appRole'))
  })

  it('every table the app role reads is probed, in each of its text and key columns that hold a value of B\'s', () => {
    expect([...new Set(columns.map((c) => c.table))].sort()).toEqual(APP_TABLES)
    expect(columns.map((c) => `${c.table}.${c.column}`)).toEqual(expect.arrayContaining([
      'users.email', 'skills.slug', 'api_keys.key_hash', 'audit_logs.action', 'audit_logs.actor_id', 'tenants.slug', 'tenants.id',
      'users.tenant_id', 'skills.id', 'skill_versions.version', 'audit_logs.seq', 'audit_logs.row_hash',
    ]))
  })

  it.each(ATTACK_CONTEXTS)('%s: EXPLAIN, estimates and counters are the same whether or not B holds the value', { timeout: 900_000 }, async (context) => {
    const leaks = await attack(appUrl(t), columns, context)
    expect(leaks).toEqual([])
  })
})

/** The attack has teeth: the same probes find the leaks 0014 closed once one is put back. */
describe('the attack finds a side channel where there is one', () => {
  const t = useTestDatabase('migrated')
  let columns: ProbeColumn[]
  beforeAll(async () => {
    await seedSecrets(t.admin)
    columns = (await probeColumns(t.admin, inject('appRole'))).filter((c) => ['users', 'skills'].includes(c.table))
    // What 13be881 had: a global index on users.email, and statistics on skills.slug (B with enough
    // slugs by the prefix of the one probed for estimates to show them).
    await sql.raw(`insert into skills (id, tenant_id, name, slug, description, category, content)
        select 'qbulk' || g, '${TENANT_B}', 'n', 'qskills.slug-' || g, 'd', 'c', 'c' from generate_series(1, 300) g;
      create index users_email_global on users (email); alter table skills alter column slug set statistics 100; analyze skills`).execute(t.admin)
    await sql.raw('vacuum users').execute(t.admin)
  })

  it('a global index: "Rows Removed by Filter" and the counters tell whether B holds an email; statistics: estimates tell B\'s slugs', async () => {
    const leaks = await attack(appUrl(t), columns, 'tenant A entered', { limit: 1000 })
    const found = new Set(leaks.map((l) => l.probe.split(':')[0]))
    expect(found).toContain('users.email')
    expect(found).toContain('skills.slug')
    expect(leaks.find((l) => l.probe.startsWith('users.email') && /Rows Removed by Filter: 1/.test(l.held))).toBeDefined()
  })
})

/**
 * The outside review's finding on the contract phase: 0010 (written before the open phase) built a
 * global index on api_keys.key_hash that only 0015 dropped, and the app role recovered every other
 * tenant's key hash through it, for as long as a lock kept the run stopped in between.
 */
describe('the contract phase opens no side channel on the way, finished or stopped halfway', () => {
  const t = useTestDatabase('migrated')
  const violations = async () => (await sql<{ v: string }>`select coalesce(string_agg(v, '; '), '') as v from skills_db.side_channel_violations() v`.execute(t.admin)).rows[0]!.v
  beforeAll(async () => {
    await sql.raw(`alter database "${t.name}" set timezone to 'UTC'; alter database "${t.name}" owner to "${inject('ownerRole')}"`).execute(t.admin)
    await seedSecrets(t.admin)
  })

  it('stopped by a lock the app role holds after 0010 built its keys: nothing the app role can count through, and EXPLAIN tells nothing of B\'s key hashes', { timeout: 300_000 }, async () => {
    const app = await connectClient({ connectionString: appUrl(t), application_name: 'the app holding users' })
    await app.query('begin; lock table users in access share mode')
    try {
      const stopped = await migrateContract(t.connectAs(inject('ownerRole'), 'test', 1), { appRole: inject('appRole'), allowOldAppSessions: true, lockRetryBudgetMs: 1000 })
      expect(stopped).toMatchObject({ status: 'error', error: { migration: '0010_contract_tenant_keys' } })
      // The step it stopped at names the lock the app holds, on users, and the session holding it
      // (its state and query are the owner's to see only with pg_read_all_stats).
      expect(stopped.status === 'error' && stopped.error.message).toMatch(/gave up waiting for a lock on table \S+ \(or a table it locks with it: [^)]*users[^)]*\): held by pid \d+ \(the app holding users(, idle in transaction)?, holds users/)
      expect(await violations()).toBe('')
      const columns = (await probeColumns(t.admin, inject('appRole'))).filter((c) => c.table === 'api_keys')
      expect(columns.map((c) => c.column)).toContain('key_hash')
      expect(await attack(appUrl(t), columns, 'tenant A entered')).toEqual([])
    } finally {
      await app.query('rollback').catch(() => {})
      await app.end()
    }
  })

  it('run to the end, checked after every step it reports: never an index or statistics the app role could observe B through', { timeout: 300_000 }, async () => {
    const checks: Promise<{ line: string; v: string }>[] = []
    const logger = { info: (line: string) => void checks.push(violations().then((v) => ({ line, v }))) }
    const outcome = await migrateContract(t.connectAs(inject('ownerRole'), 'test', 1), { appRole: inject('appRole'), allowOldAppSessions: true, logger })
    expect(outcome.status === 'error' ? outcome.error.message : outcome.status).toBe('applied')
    const seen = await Promise.all(checks)
    expect(seen.length).toBeGreaterThan(50)
    expect(seen.filter((s) => s.v !== '')).toEqual([])
  })
})
