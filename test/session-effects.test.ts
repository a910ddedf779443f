import { DummyDriver, Kysely, PostgresAdapter, PostgresIntrospector, PostgresQueryCompiler, sql, CompiledQuery } from 'kysely'
import { jsonArrayFrom } from 'kysely/helpers/postgres'
import { describe, expect, it } from 'vitest'
import type { DB } from '../src/db-types.ts'
import { leavesSessionAsIs } from '../src/tenancy/session-effects.ts'

// Only compiles queries (what withTenant looks at is the query Kysely built, before it is sent):
// no server is needed to tell what a statement is made of. What a statement of each kind does to
// the session on a real server is in test/tenant-context-protocol.test.ts.
const db = new Kysely<DB>({
  dialect: { createAdapter: () => new PostgresAdapter(), createDriver: () => new DummyDriver(), createIntrospector: (k) => new PostgresIntrospector(k), createQueryCompiler: () => new PostgresQueryCompiler() },
})
const node = (q: { compile(): CompiledQuery }) => q.compile().query

describe('leavesSessionAsIs: statements of the query builder that can change nothing of the session', () => {
  it.each([
    ['a select with a where', db.selectFrom('skills').selectAll().where('slug', '=', 'x')],
    ['an order by, descending', db.selectFrom('skills').select('id').orderBy('total_uses', 'desc')],
    ['a select with an order, a limit, a join, a subquery', db.selectFrom('skills').innerJoin('users', 'users.id', 'skills.author_id').select(['skills.id', 'users.email']).where('skills.id', 'in', db.selectFrom('ratings').select('skill_id')).orderBy('total_uses', 'desc').limit(10)],
    ['an insert', db.insertInto('skills').values({ id: 'x', slug: 'x', name: 'x', author_id: 'u' } as never)],
    ['an update with arithmetic', db.updateTable('skills').set((eb) => ({ total_uses: eb('total_uses', '+', 1) })).where('slug', '=', 'x')],
    ['a delete', db.deleteFrom('skills').where('id', '=', 'x')],
    ['a value that looks like a node', db.selectFrom('skills').selectAll().where('name', '=', { kind: 'RawNode' } as never)],
  ])('%s: yes', (_label, query) => {
    expect(leavesSessionAsIs(node(query))).toBe(true)
  })

  it.each([
    ['SQL written by hand', { compile: () => sql`select 1`.compile(db) }],
    ['a raw order direction that is not one', db.selectFrom('skills').select('id').orderBy(sql`pg_advisory_lock(1)`)],
    ['a sql fragment in a where', db.selectFrom('skills').selectAll().where(sql<boolean>`true`)],
    ['a function', db.selectFrom('skills').select((eb) => eb.fn<string>('set_config', [eb.val('a.b'), eb.val('c'), eb.val(false)]).as('s'))],
    ['an aggregate', db.selectFrom('skills').select((eb) => eb.fn.countAll().as('n'))],
    ['a helper made of sql', db.selectFrom('users').select((eb) => jsonArrayFrom(eb.selectFrom('skills').select('id').whereRef('skills.author_id', '=', 'users.id')).as('skills'))],
    ['a schema statement (a temporary table)', db.schema.createTable('t').temporary().addColumn('a', 'text')],
    ['a statement with no query', { compile: () => CompiledQuery.raw('select 1') }],
  ])('%s: no', (_label, query) => {
    expect(leavesSessionAsIs(node(query as { compile(): CompiledQuery }))).toBe(false)
  })

  it('no query at all: no', () => {
    expect(leavesSessionAsIs(undefined)).toBe(false)
  })
})
