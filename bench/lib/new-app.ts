import { randomUUID } from 'node:crypto'
import { sql } from 'kysely'
import { createDb } from '../../src/connection/create-db.ts'
import { withTenant } from '../../src/tenancy/with-tenant.ts'
import { now } from './clock.ts'
import type { OldAppLoad, Sample } from './old-app.ts'

/**
 * The multi-tenant app: `connections` clients as the application role, each request one
 * withTenant transaction of one tenant (the same statements as the old app's, plus the lookup),
 * each request timed as one sample. Its rating write works both before the contract phase and
 * after: the unique key it would name in ON CONFLICT changes in between, so it updates, and
 * inserts when nothing was there (ON CONFLICT DO NOTHING, which names no key).
 */
export function startNewApp(url: string, { connections = 4, skills, users, tenantId, tenantKey, maxMs = 600_000 }:
  { connections?: number; skills: number; users: number; tenantId: string; tenantKey: string; maxMs?: number }): OldAppLoad {
  const samples: Sample[] = []
  const acknowledged: string[] = []
  let running = true
  const deadline = Date.now() + maxMs
  const pick = (n: number) => 1 + Math.floor(Math.random() * n)

  const worker = async () => {
    const db = createDb(url, { max: 1, tenantKey, applicationName: 'new multi-tenant app' })
    const timed = async (op: Sample['op'], fn: () => Promise<boolean | void>) => {
      const start = now()
      try {
        const empty = await fn()
        samples.push({ op, end: now(), ms: now() - start, ...(empty === true ? { empty: true } : {}) })
        return true
      } catch (error) {
        samples.push({ op, end: now(), ms: now() - start, error: (error as Error).message.split('\n')[0]! })
        return false
      }
    }
    try {
      while (running && Date.now() < deadline) {
        const id = `load-${randomUUID()}`
        const skill = `s${pick(skills)}`
        const user = `u${pick(users)}`
        const wrote = await timed('insert_event', () => withTenant(db, tenantId, async (trx) => {
          await trx.insertInto('usage_events').values({ id, tool_name: 'cli', skill_id: skill, user_id: user, metadata: '{}' }).execute()
        }))
        if (wrote) acknowledged.push(id)
        await timed('bump_uses', () => withTenant(db, tenantId, async (trx, t) => {
          await trx.updateTable('skills').set((eb) => ({ total_uses: eb('total_uses', '+', 1) })).where('tenant_id', '=', t.tenantId).where('id', '=', skill).execute()
        }))
        await timed('upsert_rating', () => withTenant(db, tenantId, async (trx) => {
          const { numUpdatedRows } = await trx.updateTable('ratings').set({ rating: pick(5), updated_at: sql`now()` }).where('skill_id', '=', skill).where('user_id', '=', user).executeTakeFirst()
          if (numUpdatedRows === 0n) await sql`insert into ratings (skill_id, user_id, rating) values (${skill}, ${user}, ${pick(5)}) on conflict do nothing`.execute(trx)
        }))
        await timed('select_slug', () => withTenant(db, tenantId, async (trx, t) =>
          (await trx.selectFrom('skills').selectAll().where('tenant_id', '=', t.tenantId).where('slug', '=', `skill-${pick(skills)}`).execute()).length === 0))
      }
    } finally {
      await db.destroy().catch(() => {})
    }
  }
  const workers = Array.from({ length: connections }, worker)
  return {
    samples,
    acknowledged,
    async stop() {
      running = false
      await Promise.all(workers)
    },
  }
}
