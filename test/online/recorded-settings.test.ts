import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { forget, readRecorded, record } from '../../src/online/recorded-settings.ts'
import { useTestDatabase } from '../support/database.ts'

describe('online/recorded-settings', () => {
  const t = useTestDatabase('empty')

  it('records, keeps the first value unless replaced, forgets; reads nothing before the table exists', async () => {
    await sql`create schema skills_db`.execute(t.admin)
    expect(await readRecorded(t.admin, 'k')).toBeUndefined()
    await forget(t.admin, 'k')
    await record(t.admin, 'k', 'first')
    await record(t.admin, 'k', 'second')
    expect(await readRecorded(t.admin, 'k')).toBe('first')
    await record(t.admin, 'k', 'second', { replace: true })
    expect(await readRecorded(t.admin, 'k')).toBe('second')
    await forget(t.admin, 'k')
    expect(await readRecorded(t.admin, 'k')).toBeUndefined()
  })
})
