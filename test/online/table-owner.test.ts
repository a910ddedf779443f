import { sql } from 'kysely'
import { describe, expect, inject, it } from 'vitest'
import { ownerIfConfinable } from '../../src/online/table-owner.ts'
import { useTestDatabase } from '../support/database.ts'

describe('online/table-owner', () => {
  const t = useTestDatabase('empty')
  const role = `${inject('runId')}_blk_owner`

  it('the owner as a policy\'s roles when row security can confine it; none for a superuser; a missing table named', async () => {
    await sql.raw(`create table toy (id int); create table toy2 (id int); create role "${role}" nologin; alter table toy2 owner to "${role}"`).execute(t.admin)
    try {
      expect(await ownerIfConfinable('toy')(t.admin)).toEqual([])
      expect(await ownerIfConfinable('toy2')(t.admin)).toEqual([role])
      await expect(ownerIfConfinable('nope')(t.admin)).rejects.toThrow('table nope does not exist')
    } finally {
      await sql.raw(`drop table toy2; drop role "${role}"`).execute(t.admin)
    }
  })
})
