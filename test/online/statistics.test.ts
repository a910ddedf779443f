import { sql } from 'kysely'
import { describe, expect, it } from 'vitest'
import { withoutStatistics } from '../../src/online/statistics.ts'
import { inRun } from '../../src/online/run-context.ts'
import { connectClient } from '../../src/connection/pg-client.ts'
import { blockLaws } from '../support/block-laws.ts'
import { useTestDatabase } from '../support/database.ts'

/** A table whose columns have targets of every kind, one a policy reads (its type cannot change under the policy). */
const setup = async (db: Parameters<Parameters<typeof blockLaws>[1]['setup']>[0]) =>
  void (await sql`create table toy (tenant_id text not null, id int, note text, primary key (tenant_id, id));
    alter table toy alter column note set statistics 0, alter column id set statistics 50;
    alter table toy enable row level security;
    create policy toy_tenant on toy as restrictive for select to public using (tenant_id = current_user);
    insert into toy select 't' || (g % 3), g, 'n' || g from generate_series(1, 200) g; analyze toy`.execute(db))

blockLaws('online/statistics', { setup, step: () => withoutStatistics('toy') })

describe('online/statistics: what was collected goes, and comes back with down', () => {
  const t = useTestDatabase('empty')
  it('no column keeps statistics after up; down gives each its target back and analyzes', async () => {
    await sql`create schema if not exists skills_db`.execute(t.admin)
    await setup(t.admin)
    const collected = async () => (await sql<{ c: string }>`select attname as c from pg_stats where tablename = 'toy' order by 1`.execute(t.admin)).rows.map((r) => r.c)
    expect(await collected()).toEqual(['id', 'tenant_id'])
    await withoutStatistics('toy').up(t.admin)
    expect(await collected()).toEqual([])
    await sql`analyze toy`.execute(t.admin)
    expect(await collected()).toEqual([])
    await withoutStatistics('toy').down(t.admin)
    expect(await collected()).toEqual(['id', 'tenant_id'])
  })
})

describe('online/statistics under a steady load of writes that reference the table', () => {
  const t = useTestDatabase('empty')
  it('completes: the new app\'s entry first, then the tables on the other side of its foreign keys, in the writers\' order', async () => {
    // root stands for tenants, parent for users, child for usage_events, and
    // skills_db.tenant_context_keys for the table enter() reads first.
    await sql`create schema if not exists skills_db; create table skills_db.tenant_context_keys (key_id text primary key);
      create table root (id text primary key);
      create table parent (root_id text not null references root, id text, primary key (root_id, id));
      create table child (root_id text not null references root, id serial, parent_id text not null, note text, primary key (root_id, id),
        foreign key (root_id, parent_id) references parent);
      insert into root values ('r'); insert into parent select 'r', 'p' || g from generate_series(1, 100) g; analyze parent`.execute(t.admin)
    // Writers of both apps, each transaction a child row (its foreign-key check locks parent) and a
    // few milliseconds before its commit, as an app's round trips take: the single-tenant app's,
    // and the new app's, which reads the keys and parent first, as withTenant's enter() does.
    const statements: Record<'old' | 'new', (p: string) => [string, unknown[]][]> = {
      old: (p: string) => [['insert into child (root_id, parent_id, note) values ($1, $2, $3)', ['r', p, 'old']]],
      new: (p: string) => [['select count(*) from skills_db.tenant_context_keys', []], ['select 1 from root where id = $1', ['r']],
        ['insert into child (root_id, parent_id, note) values ($1, $2, $3)', ['r', p, 'new']]],
    }
    let stop = false
    let written = 0
    const errors: string[] = []
    const writers = (['old', 'new', 'old', 'new', 'old', 'new', 'old', 'new'] as const).map(async (kind, w) => {
      const client = await connectClient({ connectionString: t.url, application_name: `${kind} app` })
      try {
        for (let i = 0; !stop; i++) {
          try {
            await client.query('begin')
            for (const [text, values] of statements[kind](`p${1 + ((w * 31 + i) % 100)}`)) await client.query(text, values)
            await client.query('select pg_sleep(0.003)')
            await client.query('commit')
            written++
          } catch (error) {
            errors.push((error as Error).message)
            await client.query('rollback').catch(() => {})
          }
        }
      } finally {
        await client.end()
      }
    })
    try {
      await new Promise((r) => setTimeout(r, 200))
      const before = written
      await inRun({ lockTimeoutMs: 50, lockRetryBudgetMs: 20_000 }, () => withoutStatistics('parent').up(t.admin))
      await new Promise((r) => setTimeout(r, 200))
      expect(written, 'the writers kept writing').toBeGreaterThan(before)
    } finally {
      stop = true
      await Promise.all(writers)
    }
    expect(errors).toEqual([])
    expect((await sql<{ n: number }>`select count(*)::int as n from pg_stats where tablename = 'parent'`.execute(t.admin)).rows[0]!.n).toBe(0)
  })
})
