import { sql, type Kysely } from 'kysely'
import { beforeAll, describe, expect, inject } from 'vitest'
import type { DB } from '../src/db-types.ts'
import { migrateContract } from '../src/migrator/migrate.ts'
import { useTestDatabase } from './support/database.ts'
import { describeInjectionSuite, onTestDatabase } from './support/injection-suite.ts'
import { describeIsolationMatrix } from './support/isolation-matrix.ts'
import { CONTRACT_MIGRATION_NAMES } from './support/migration-names.ts'
import { seedTwoTenants } from './support/tenants.ts'

/**
 * The contract phase changes every key, the timestamps and the SET NULL references, and drops the
 * old app's lane: the isolation matrix and the injection suite, run again on its result (contracted
 * by the owner, as in production), show that none of that opened a way between tenants.
 */
describe('on the contracted schema', () => {
  const t = useTestDatabase('migrated')
  let app: Kysely<DB>
  beforeAll(async () => {
    // As the template was migrated: by the owner, which owns the database (a clone is the creator's).
    await sql.raw(`alter database "${t.name}" set timezone to 'UTC'; alter database "${t.name}" owner to "${inject('ownerRole')}"`).execute(t.admin)
    await seedTwoTenants(t.admin)
    // This file's own superuser pool is connected, and it is not an old app.
    const outcome = await migrateContract(t.connectAs(inject('ownerRole'), 'test', 1), { appRole: inject('appRole'), allowOldAppSessions: true })
    expect(outcome.status === 'error' ? outcome.error.message : outcome.status).toBe('applied')
    expect(outcome).toMatchObject({ status: 'applied', steps: CONTRACT_MIGRATION_NAMES.map((name) => ({ name })) })
    app = t.connectAs(inject('appRole'), 'test', 1)
  })

  describe('tenant isolation, as the application role', () => {
    describeIsolationMatrix(() => app, { role: () => inject('appRole') })
  })

  describeInjectionSuite(onTestDatabase(t, () => app))
})
