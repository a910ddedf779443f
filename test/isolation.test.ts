import { sql, type Kysely } from 'kysely'
import { beforeAll, describe, expect, inject, it } from 'vitest'
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

  it('the application role is neither superuser, nor BYPASSRLS, nor owner of anything', async () => {
    const { rows } = await sql<{ rolsuper: boolean; rolbypassrls: boolean; owns: number; me: string }>`
      select r.rolsuper, r.rolbypassrls, current_user as me,
        (select count(*)::int from pg_class where relowner = r.oid) + (select count(*)::int from pg_proc where proowner = r.oid) as owns
      from pg_roles r where r.rolname = current_user`.execute(app)
    expect(rows[0]).toEqual({ rolsuper: false, rolbypassrls: false, owns: 0, me: inject('appRole') })
  })

  describeIsolationMatrix(() => app)
})
