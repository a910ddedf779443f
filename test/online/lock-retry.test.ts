import { sql } from 'kysely'
import { createDb } from '../../src/connection/create-db.ts'
import { describe, expect, inject, it } from 'vitest'
import { LockRetryExhausted, withLockRetry } from '../../src/online/lock-retry.ts'
import { inRun } from '../../src/online/run-context.ts'
import { useTestDatabase } from '../support/database.ts'
import { connectClient } from '../../src/connection/pg-client.ts'
import { createScratchDatabase, dropScratchDatabase, scratchName } from '../../src/connection/scratch-database.ts'

describe('online/lock-retry', () => {
  const t = useTestDatabase('empty')

  /** Another session holding `mode` on toy until `release()`. */
  async function holdLock(mode: string) {
    const client = await connectClient({ connectionString: t.url, application_name: 'the lock holder' })
    await client.query('begin')
    await client.query(`lock table toy in ${mode} mode`)
    return { release: async () => { await client.query('commit'); await client.end() } }
  }

  it('waits at most the lock timeout per try, retries, and goes ahead once the lock is free', async () => {
    await sql`create table toy (id int primary key)`.execute(t.admin)
    const holder = await holdLock('access share')
    const started = Date.now()
    setTimeout(() => void holder.release(), 400)
    const tries: number[] = []
    await inRun({ lockTimeoutMs: 20 }, () => withLockRetry(t.admin, 'toy', async (trx) => {
      tries.push(Date.now() - started)
      await sql`alter table toy add column v int`.execute(trx)
    }))
    expect(tries.length).toBeGreaterThan(1)
    expect((await sql<{ n: number }>`select count(*)::int as n from pg_attribute where attrelid = 'toy'::regclass and attname = 'v'`.execute(t.admin)).rows[0]!.n).toBe(1)
  })

  it('when the retry budget runs out, names the table and the session holding it; nothing changed', async () => {
    const holder = await holdLock('access share')
    try {
      const attempt = inRun({ lockTimeoutMs: 20, lockRetryBudgetMs: 300 }, () =>
        withLockRetry(t.admin, 'toy', (trx) => sql`alter table toy add column w int`.execute(trx)))
      await expect(attempt).rejects.toThrow(LockRetryExhausted)
      await expect(attempt).rejects.toThrow(/gave up waiting for a lock on table toy: held by pid \d+ \(the lock holder, idle in transaction, holds toy, lock table toy/)
    } finally {
      await holder.release()
    }
    expect((await sql<{ n: number }>`select count(*)::int as n from pg_attribute where attrelid = 'toy'::regclass and attname = 'w'`.execute(t.admin)).rows[0]!.n).toBe(0)
  })

  it('appSafe steps wait in one go, for up to the retry budget, then name the holder; other errors are not retried', async () => {
    const holder = await holdLock('share update exclusive')
    setTimeout(() => void holder.release(), 300)
    const started = Date.now()
    let tries = 0
    await inRun({ lockTimeoutMs: 20, lockRetryBudgetMs: 5_000 }, () =>
      withLockRetry(t.admin, 'toy', (trx) => { tries++; return sql`analyze toy`.execute(trx) }, { appSafe: true }))
    expect(Date.now() - started).toBeGreaterThanOrEqual(250)
    expect(tries).toBe(1)
    // A session that never lets go (an app role's transaction left open) no longer holds the run for good.
    const squatter = await holdLock('share update exclusive')
    try {
      const waited = Date.now()
      await expect(inRun({ lockTimeoutMs: 20, lockRetryBudgetMs: 500 }, () =>
        withLockRetry(t.admin, 'toy', (trx) => sql`analyze toy`.execute(trx), { appSafe: true })))
        .rejects.toThrow(/gave up waiting for a lock on table toy: held by pid \d+ \(the lock holder, idle in transaction, holds toy/)
      expect(Date.now() - waited).toBeGreaterThanOrEqual(450)
    } finally {
      await squatter.release()
    }
    let calls = 0
    await expect(withLockRetry(t.admin, 'toy', async (trx) => {
      calls++
      await sql`select no_such_column from toy`.execute(trx)
    })).rejects.toThrow(/no_such_column/)
    expect(calls).toBe(1)
  })
})

/**
 * CI's finding: a database cloned from another has the same relation oids, and the holders named
 * were whoever held "the same" oid in any database (the other test files' app sessions).
 */
describe('online/lock-retry: the holders named are of this database only', () => {
  it('a session holding the same table of a clone is not named; the one holding it here is', async () => {
    const adminUrl = inject('adminUrl')
    const here = scratchName(`${inject('runId')}_lh`)
    const clone = scratchName(`${inject('runId')}_lc`)
    const url = await createScratchDatabase(adminUrl, here)
    const closing: (() => Promise<unknown>)[] = [() => dropScratchDatabase(adminUrl, here)]
    try {
      const setUp = await connectClient({ connectionString: url })
      await setUp.query('create table toy (id int primary key)')
      await setUp.end()
      const cloneUrl = await createScratchDatabase(adminUrl, clone, here)
      closing.unshift(() => dropScratchDatabase(adminUrl, clone))
      const holders = [] as Awaited<ReturnType<typeof connectClient>>[]
      for (const [at, name] of [[cloneUrl, 'the clone holder'], [url, 'the lock holder']] as const) {
        const c = await connectClient({ connectionString: at, application_name: name })
        closing.unshift(() => c.end())
        await c.query('begin; lock table toy in access share mode')
        holders.push(c)
      }
      const sameOid = await Promise.all(holders.map(async (c) => (await c.query(`select 'toy'::regclass::oid as oid`)).rows[0].oid))
      expect(sameOid[0]).toBe(sameOid[1])
      const db = createDb<any>(url, { max: 1 })
      closing.unshift(() => db.destroy())
      const attempt = inRun({ lockTimeoutMs: 20, lockRetryBudgetMs: 200 }, () =>
        withLockRetry(db, 'toy', (trx) => sql`alter table toy add column w int`.execute(trx)))
      await expect(attempt).rejects.toThrow(/held by pid \d+ \(the lock holder, idle in transaction, holds toy, [^)]*\); end that session/)
      await expect(attempt).rejects.not.toThrow(/the clone holder/)
    } finally {
      for (const close of closing) await close().catch(() => {})
    }
  })
})
