import { sql } from 'kysely'
import { namedOldAppRolesGranted, oldAppEscapePrivilegesRevoked, recordOldAppRoles } from '../../src/online/old-app-roles.ts'
import { record } from '../../src/online/recorded-settings.ts'
import { blockLaws } from '../support/block-laws.ts'

const toy = async (db: Parameters<Parameters<typeof blockLaws>[1]['setup']>[0]) => void (await sql`create table toy (id int primary key)`.execute(db))

blockLaws('online/old-app-roles (named roles created and granted)', {
  setup: toy,
  step: () => namedOldAppRolesGranted(['toy'], ['select', 'insert']),
  context: ({ newRole }) => ({ oldAppRoles: [newRole] }),
  // The roles it created outlive it (roles are cluster-wide), and so does their record: a later down still revokes from them.
  downKeeps: ['recorded', 'roles'],
})

blockLaws('online/old-app-roles (recorded)', {
  setup: toy,
  step: ({ role }) => recordOldAppRoles(async () => [role]),
})

blockLaws('online/old-app-roles (TRUNCATE, TRIGGER, REFERENCES taken, and given back)', {
  setup: async (db, { role }) => {
    await toy(db)
    await sql.raw(`grant select, truncate, trigger, references on toy to "${role}"`).execute(db)
    await record(db, 'old_app_roles', role)
  },
  step: () => oldAppEscapePrivilegesRevoked(['toy']),
})
