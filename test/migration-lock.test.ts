import { sql } from 'kysely'
import { describe, expect, inject, it } from 'vitest'
import { connectClient } from '../src/connection/pg-client.ts'
import { migrateToLatest } from '../src/migrator/migrate.ts'
import { useTestDatabase } from './support/database.ts'
import { TEST_TENANT_KEY } from './support/tenant-key.ts'

describe('the migration lock', () => {
  const t = useTestDatabase('migrated')

  it('the app role holding its key (the first one, or one it saw in pg_locks during a run) does not hold the migrator up: the lock moves to a new key', { timeout: 120_000 }, async () => {
    const key = async () => (await sql<{ k: string }>`select lock_key::text as k from skills_db.migration_lock`.execute(t.admin)).rows[0]!.k
    const before = await key()
    const u = new URL(t.url)
    u.username = inject('appRole')
    u.password = 'test'
    const app = await connectClient({ connectionString: u.toString(), application_name: 'squatter' })
    try {
      // The constant an outside review took with 13be881, and the key in use now.
      expect((await app.query('select pg_try_advisory_lock(7400113650211842) as a, pg_try_advisory_lock($1::bigint) as b', [before])).rows).toEqual([{ a: true, b: true }])
      const progress: string[] = []
      const outcome = await migrateToLatest(t.admin, { appRole: inject('appRole'), tenantKeys: [TEST_TENANT_KEY], logger: { info: (m: string) => progress.push(m) } })
      expect(outcome.status === 'error' ? outcome.error.message : outcome.status).toBe('up-to-date')
      expect(await key()).not.toBe(before)
      expect(progress.join('\n')).toMatch(/the migration lock's key was held by pid \d+ \(\w+\), which cannot migrate: the lock moved to a new key/)
      // And the app role still cannot read where the key is kept.
      await expect(app.query('select lock_key from skills_db.migration_lock')).rejects.toThrow(/permission denied for schema skills_db/)
    } finally {
      await app.end()
    }
  })
})
