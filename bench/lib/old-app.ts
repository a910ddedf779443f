import { now } from './clock.ts'
import { randomUUID } from 'node:crypto'
import pg from 'pg'

/** One statement the old app ran: when it finished, how long it took, and its error if any. */
export interface Sample {
  op: 'insert_event' | 'bump_uses' | 'upsert_rating' | 'select_slug'
  end: number
  ms: number
  error?: string
  /** a lookup that should have found its row found none (the app would show "not found") */
  empty?: boolean
}

export interface OldAppLoad {
  samples: Sample[]
  /** ids of usage_events whose INSERT the server acknowledged */
  acknowledged: string[]
  stop(): Promise<void>
}

/**
 * The single-tenant app as it runs today: `connections` clients in a tight loop, connected the
 * way it connects now (the superuser, no tenant context), each statement timed. Stops by itself
 * after `maxMs` at the latest.
 */
export function startOldApp(url: string, { connections = 4, skills, users, maxMs = 600_000 }: { connections?: number; skills: number; users: number; maxMs?: number }): OldAppLoad {
  const samples: Sample[] = []
  const acknowledged: string[] = []
  let running = true
  const deadline = Date.now() + maxMs
  const pick = (n: number) => 1 + Math.floor(Math.random() * n)

  const worker = async () => {
    const client = new pg.Client({ connectionString: url, application_name: 'old single-tenant app' })
    client.on('error', () => {})
    await client.connect()
    const timed = async (op: Sample['op'], text: string, values: unknown[]) => {
      const start = now()
      try {
        const result = await client.query(text, values)
        samples.push({ op, end: now(), ms: now() - start, ...(op === 'select_slug' && result.rowCount === 0 ? { empty: true } : {}) })
        return true
      } catch (error) {
        samples.push({ op, end: now(), ms: now() - start, error: (error as Error).message })
        return false
      }
    }
    try {
      while (running && Date.now() < deadline) {
        const id = `load-${randomUUID()}`
        const skill = `s${pick(skills)}`
        const user = `u${pick(users)}`
        if (await timed('insert_event', `insert into usage_events (id, tool_name, skill_id, user_id, metadata) values ($1, 'cli', $2, $3, '{}')`, [id, skill, user])) {
          acknowledged.push(id)
        }
        await timed('bump_uses', 'update skills set total_uses = total_uses + 1 where id = $1', [skill])
        await timed('upsert_rating', `insert into ratings (skill_id, user_id, rating) values ($1, $2, $3)
          on conflict (skill_id, user_id) do update set rating = excluded.rating, updated_at = now()`, [skill, user, pick(5)])
        await timed('select_slug', 'select * from skills where slug = $1', [`skill-${pick(skills)}`])
      }
    } finally {
      await client.end().catch(() => {})
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
