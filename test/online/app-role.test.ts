import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { appRole, appRoleName } from '../../src/online/app-role.ts'
import { record } from '../../src/online/recorded-settings.ts'
import { inRun } from '../../src/online/run-context.ts'
import { blockLaws } from '../support/block-laws.ts'
import { useTestDatabase } from '../support/database.ts'

// Creates the role the run names (LOGIN, nothing that escapes row security) and records it; down forgets the record, keeping the role.
blockLaws('online/app-role', {
  setup: async () => {},
  step: () => appRole,
  context: ({ newRole }) => ({ appRole: newRole }),
  // Roles are cluster-wide: the one it created outlives its down.
  downKeeps: ['roles'],
})

describe('online/app-role: which role is the app role', () => {
  const t = useTestDatabase('empty')

  it('the recorded one, else the one the run names, else app_user; another name than the recorded one is refused', async () => {
    await sql`create schema skills_db`.execute(t.admin)
    expect(await appRoleName(t.admin)).toBe('app_user')
    expect(await inRun({ appRole: 'named_here' }, () => appRoleName(t.admin))).toBe('named_here')
    await record(t.admin, 'app_role', 'recorded_one')
    expect(await appRoleName(t.admin)).toBe('recorded_one')
    await expect(inRun({ appRole: 'named_here' }, () => appRoleName(t.admin))).rejects.toThrow(/application role is recorded_one, not named_here/)
    await sql`delete from skills_db.settings where key = 'app_role'`.execute(t.admin)
    await expect(inRun({ appRole: 'Not-Plain' }, () => appRoleName(t.admin))).rejects.toThrow(/application role name "Not-Plain" is not allowed/)
  })
})
