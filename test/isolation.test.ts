import type { Kysely } from 'kysely'
import { beforeAll, describe, inject } from 'vitest'
import type { DB } from '../src/db-types.ts'
import { useTestDatabase } from './support/database.ts'
import { describeIsolationMatrix } from './support/isolation-matrix.ts'
import { seedTwoTenants } from './support/tenants.ts'

describe('tenant isolation, as the application role', () => {
  const t = useTestDatabase('migrated')
  let app: Kysely<DB>
  beforeAll(async () => {
    await seedTwoTenants(t.admin)
    app = t.connectAs(inject('appRole'))
  })

  describeIsolationMatrix(() => app, { role: () => inject('appRole') })
})
