import { CompiledQuery, QueryNode, sql, type Kysely, type RootOperationNode, type SelectQueryNode } from 'kysely'
import { jsonArrayFrom } from 'kysely/helpers/postgres'
import { beforeAll, describe, expect, inject, it, vi } from 'vitest'
import type { DB } from '../src/db-types.ts'
import { isSessionSafe, KNOWN_RELATIONS, knownRelations, madeOfSafeNodes, onlyQuotedNames, SESSION_CHANGING_REACHABLE, type KnownRelations } from '../src/tenancy/session-safe-statements.ts'
import { withTenant } from '../src/tenancy/with-tenant.ts'
import { useTestDatabase } from './support/database.ts'
import { A, B, seedTwoTenants } from './support/tenants.ts'

/**
 * Session-safe statements (issue 18): a withTenant request whose statements are all of this kind
 * ends with COMMIT alone. What withTenant does with them end to end, and the three statements that
 * beat the first version of this (8f72ed9), are in test/tenant-context-protocol.test.ts.
 */
/** What the owner's code of review 6 runs: a session setting that names the tenant entered. */
const LEAK = `select pg_catalog.set_config('app.leak', coalesce(pg_catalog.current_setting('app.current_tenant_id', true), 'A-was-here'), false)`

describe('session-safe statements', () => {
  const t = useTestDatabase('migrated')
  let app: Kysely<DB>
  let relations: KnownRelations
  beforeAll(async () => {
    await seedTwoTenants(t.admin)
    app = t.connectAs(inject('appRole'), 'test', 2, { pipelinedWithTenant: true })
    relations = knownRelations((await sql<{ c: [string, string[], boolean][] }>`select (${sql.raw(KNOWN_RELATIONS)}) as c`.execute(app)).rows[0]!.c)
  })
  const node = (q: { compile(): CompiledQuery }) => q.compile().query as RootOperationNode
  const safe = (q: { compile(): CompiledQuery }) => madeOfSafeNodes(node(q), relations) && onlyQuotedNames(q.compile().sql)

  describe('what the query builder makes', () => {
    it.each([
      ['a select with a where', () => app.selectFrom('skills').selectAll().where('slug', '=', 'x')],
      ['an order by, descending, nulls last', () => app.selectFrom('skills').select('id').orderBy('total_uses', (ob) => ob.desc().nullsLast())],
      ['a join, a subquery, a limit and an offset', () => app.selectFrom('skills').innerJoin('users', 'users.id', 'skills.author_id').select(['skills.id', 'users.email']).where('skills.id', 'in', app.selectFrom('ratings').select('skill_id')).orderBy('total_uses', 'desc').limit(10).offset(5)],
      ['an insert with on conflict and returning', () => app.insertInto('ratings').values({ id: 'x', skill_id: 's', user_id: 'u', rating: 5 } as never).onConflict((oc) => oc.column('id').doUpdateSet({ rating: 4 })).returning('id')],
      ['an update with arithmetic', () => app.updateTable('skills').set((eb) => ({ total_uses: eb('total_uses', '+', 1) })).where('slug', '=', 'x')],
      ['a delete', () => app.deleteFrom('ratings').where('id', '=', 'x')],
      ['count, sum and max, grouped', () => app.selectFrom('ratings').select((eb) => [eb.fn.countAll<number>().as('n'), eb.fn.sum<number>('rating').as('s'), eb.fn.max('rating').as('m')]).groupBy('skill_id').having((eb) => eb.fn.countAll(), '>', 1)],
      ['a CTE and a union', () => app.with('mine', (db) => db.selectFrom('skills').select('id')).selectFrom('mine').select('id').union(app.selectFrom('ratings').select('skill_id as id'))],
      ['for update skip locked', () => app.selectFrom('skills').select('id').forUpdate().skipLocked()],
      ['a value that looks like a node (it is a bound parameter)', () => app.selectFrom('skills').selectAll().where('name', '=', { kind: 'RawNode', sqlFragments: ['select 1'], parameters: [] } as never)],
      ['case, exists, not', () => app.selectFrom('skills').select((eb) => eb.case().when('total_uses', '>', 1).then(true).else(false).end().as('used')).where((eb) => eb.not(eb.exists(app.selectFrom('ratings').select('id'))))],
      ['a join on qualified names of both tables', () => app.selectFrom('skills').innerJoin('users', 'users.id', 'skills.author_id').select(['skills.slug', 'users.email']).where('users.id', '=', 'u')],
      ['all columns of one table (t.*)', () => app.selectFrom('skills').innerJoin('users', 'users.id', 'skills.author_id').selectAll('skills')],
      ['a relation with an alias (its columns named unqualified)', () => app.selectFrom('skills as s').select(['slug', 'name']).where('slug', '=', 'x')],
    ])('%s: safe', (_label, query) => {
      expect(safe(query())).toBe(true)
    })

    it.each([
      ['SQL written by hand', () => ({ compile: () => sql`select 1`.compile(app) })],
      ['a sql fragment in a where', () => app.selectFrom('skills').selectAll().where(sql<boolean>`true`)],
      ['a raw order that is not a direction', () => app.selectFrom('skills').select('id').orderBy(sql`pg_advisory_lock(1)`)],
      ['an explain, whatever its format', () => ({ compile: () => ({ query: QueryNode.cloneWithExplain(node(app.selectFrom('skills').select('id')) as SelectQueryNode, 'json', undefined) }) as never })],
      ['a function call', () => app.selectFrom('skills').select((eb) => eb.fn<string>('set_config', [eb.val('a.b'), eb.val('c'), eb.val(false)]).as('s'))],
      ['an aggregate of another name', () => app.selectFrom('skills').select((eb) => eb.fn.agg<string>('string_agg', ['name', eb.val(',')]).as('s'))],
      ['a cast (its type is written out as given)', () => app.selectFrom('skills').select((eb) => eb.cast('total_uses', 'text').as('t'))],
      ['a helper made of sql (jsonArrayFrom)', () => app.selectFrom('users').select((eb) => jsonArrayFrom(eb.selectFrom('skills').select('id').whereRef('skills.author_id', '=', 'users.id')).as('skills'))],
      ['a modifier written by hand', () => app.selectFrom('skills').select('id').modifyEnd(sql`for update`)],
      ['a schema statement (a temporary table)', () => app.schema.createTable('t').temporary().addColumn('a', 'text')],
      ['a node made by hand, not frozen', () => ({ compile: () => ({ query: { kind: 'SelectQueryNode', from: { kind: 'FromNode', froms: [] } }, sql: 'select' }) as never })],
      // Review 1: "t"."f" is f(t) when t has no column f (attribute notation), a function call with no function node.
      ['a qualified name that is no column of its table (attribute notation)', () => app.selectFrom('skills').select('skills.leak' as never)],
      ['a qualified name through an alias', () => app.selectFrom('skills as s').select('s.id')],
      ['a qualified name of a CTE that shadows a table', () => app.with('skills', (db) => db.selectFrom('users').select('id')).selectFrom('skills').select('skills.id')],
      ['a qualified name of a relation the role cannot see', () => app.selectFrom('skills').select('pg_authid.rolname' as never)],
      // Review 3: a table in an expression is "skills"."late", which is late(skills).
      ['a table in an expression (eb.table)', () => app.selectFrom('skills').select((eb) => eb.table('skills.late' as never).as('x'))],
      ['a table in an expression, its schema from withSchema', () => app.withSchema('skills').selectFrom('users').select((eb) => eb.table('late' as never).as('x'))],
      ['a qualified name of a relation named with its schema in FROM (an app table of the same name would be known)', () => app.selectFrom('information_schema.tables' as never).select('tables.table_name' as never)],
      ['a name in three parts (a column\'s field, or a function of a column, as PostgreSQL may read it)', () => app.selectFrom('skills').select('public.skills.id' as never)],
      // Review 2: pg_settings is a view the app role may update, whose rule runs set_config(…, false).
      ['an update of pg_settings', () => (app as Kysely<any>).updateTable('pg_settings').set({ setting: 'x' }).where('name', '=', 'application_name')],
      ['an update of pg_catalog.pg_settings', () => (app as Kysely<any>).updateTable('pg_catalog.pg_settings').set({ setting: 'x' }).where('name', '=', 'application_name')],
      // Review 4: NaN and Infinity are written as names (a column, or a whole row of that name).
      ['NaN or Infinity as an immediate value', () => app.selectFrom('users as nan').select((eb) => eb.lit(Number('x')).as('n'))],
      ['a write to a view (its write runs what the view\'s owner wrote)', () => (app as Kysely<any>).updateTable('pg_stat_activity' as never).set({ query: 'x' } as never)],
      ['a write to a table named with its schema', () => app.updateTable('public.skills' as never).set({ name: 'x' } as never)],
      // Review 2: Kysely writes -(-1) as --1, a comment that a newline in a later quoted name ends.
      ['a negated negative number, then a name holding a newline', () => app.selectFrom('skills').select((eb) => eb.neg(eb.lit(-1)).as('\n1; select 2 --'))],
    ])('%s: not safe', (_label, query) => {
      expect(safe(query() as { compile(): CompiledQuery })).toBe(false)
    })

    it.each([
      ['select "a" from "t" where "b" = $1 and "c" in ($2, $3)', true],
      ['select "a"";--" from "t"', true],
      ['select "a\nb" from "t"', true],
      ['select --1 as "x"', false],
      ['select 1 /* c */', false],
      ['select 1; select 2', false],
      ["select 'x'", false],
      ['select $$x$$', false],
      ['select "unterminated', false],
      ['select "a" - -1', true],
    ])('onlyQuotedNames(%j): %s', (text, expected) => {
      expect(onlyQuotedNames(text)).toBe(expected)
    })

    it('an operator not on the list, in a node made by hand: not safe', () => {
      const where = app.selectFrom('skills').select('id').where('slug', '=', 'x').compile().query as unknown as { where: { where: { operator: { operator: string } } } }
      const forged = structuredClone(where) as unknown as RootOperationNode
      ;(forged as unknown as typeof where).where.where.operator.operator = '= 1; select 2; --'
      expect(madeOfSafeNodes(forged, relations)).toBe(false)
    })
  })

  describe('the verdict is kept with the compiled query fn\'s transaction made in the request, not with a copy', () => {
    it('compiled in fn\'s transaction: safe (also with a plugin or a schema); copied, compiled elsewhere or in an earlier request, or raw: not', async () => {
      const earlier = await withTenant(app, A, async (trx) => trx.selectFrom('skills').select('id').compile())
      const verdicts = await withTenant(app, A, async (trx) => {
        const compiled = trx.selectFrom('skills').select('id').compile()
        return {
          own: isSessionSafe(trx, compiled),
          withSchema: isSessionSafe(trx, trx.withSchema('public').selectFrom('skills').select('id').compile()),
          copy: isSessionSafe(trx, { ...compiled }),
          textReplaced: isSessionSafe(trx, { ...compiled, sql: 'select 1' }),
          compiledOutside: isSessionSafe(trx, app.selectFrom('skills').select('id').compile()),
          earlierRequest: isSessionSafe(trx, earlier),
          raw: isSessionSafe(trx, CompiledQuery.raw('select "id" from "skills"')),
          sql: isSessionSafe(trx, sql`select id from skills`.compile(trx)),
        }
      })
      expect(verdicts).toEqual({ own: true, withSchema: true, copy: false, textReplaced: false, compiledOutside: false, earlierRequest: false, raw: false, sql: false })
    })
  })

  // The outside reviews' attacks, end to end: what the request left does not reach the next one.
  describe('what the outside reviews left on the session through builder statements does not reach the next request', () => {
    const nextRequestSees = () => withTenant(app, B, async (trx) => (await sql<{ name: string; locks: number; prepared: number; channels: number }>`select current_setting('application_name') as name,
      (select count(*)::int from pg_catalog.pg_locks where locktype = 'advisory' and pid = pg_catalog.pg_backend_pid()) as locks,
      (select count(*)::int from pg_catalog.pg_prepared_statements where from_sql) as prepared,
      (select count(*)::int from pg_catalog.pg_listening_channels()) as channels`.execute(trx)).rows[0])
    const clean = { name: expect.not.stringMatching(/left-by-A/), locks: 0, prepared: 0, channels: 0 }

    it('an update of pg_settings (its rule sets the setting for the session)', async () => {
      await withTenant(app, A, (trx) => (trx as Kysely<any>).updateTable('pg_settings').set({ setting: 'left-by-A' }).where('name', '=', 'application_name').execute())
      expect(await nextRequestSees()).toEqual(clean)
    })

    it('a negated negative number and a name holding a newline: the rest of the name ran as SQL', async () => {
      const label = "\n1; select set_config('application_name', 'left-by-A', false), pg_advisory_lock(4242); prepare p as select 1; listen chan; select 1 --"
      await withTenant(app, A, (trx) => trx.selectFrom('skills').select((eb) => eb.neg(eb.lit(-1)).as(label)).execute())
      expect(await nextRequestSees()).toEqual(clean)
    })

    it('a function of a row made after the connection first asked, called through a table in an expression (eb.table)', async () => {
      const pooled = t.connectAs(inject('appRole'), 'test', 1, { pipelinedWithTenant: true })
      try {
        await withTenant(pooled, A, (trx) => trx.selectFrom('skills').select('id').execute())
        await sql.raw(`create function public.late(s skills) returns text volatile language sql as $$ select pg_catalog.set_config('app.leak', s.tenant_id, false) $$`).execute(t.admin)
        await withTenant(pooled, A, (trx) => trx.selectFrom('skills').select((eb) => eb.table('skills.late' as never).as('x')).limit(1).execute())
        expect(await withTenant(pooled, B, async (trx) => (await sql<{ leak: string }>`select current_setting('app.leak', true) as leak`.execute(trx)).rows[0]!.leak)).toBe('')
      } finally {
        await pooled.destroy()
        await sql`drop function public.late(skills)`.execute(t.admin)
      }
    })

    // Review 3: what a session was asked (its known columns) went stale under an open pool. Asked again after a minute.
    it('a column dropped and a function of its name made under an open pool: within a minute the session asks again, and no request leaves the function\'s setting', async () => {
      await sql.raw(`alter table skills add column score text`).execute(t.admin)
      const pooled = t.connectAs(inject('appRole'), 'test', 1, { pipelinedWithTenant: true })
      try {
        await withTenant(pooled, A, (trx) => trx.selectFrom('skills').select('id').execute())
        await sql.raw(`alter table skills drop column score;
          create function public.score(s skills) returns text volatile language sql as $$ select pg_catalog.set_config('app.leak', s.tenant_id, false) $$`).execute(t.admin)
        vi.useFakeTimers({ toFake: ['Date'] })
        vi.setSystemTime(Date.now() + 61_000)
        await withTenant(pooled, A, (trx) => trx.selectFrom('skills').select('skills.score' as never).limit(1).execute())
        expect(await withTenant(pooled, B, async (trx) => (await sql<{ leak: string }>`select current_setting('app.leak', true) as leak`.execute(trx)).rows[0]!.leak)).toBe('')
      } finally {
        vi.useRealTimers()
        await pooled.destroy()
        await sql`drop function if exists public.score(skills)`.execute(t.admin)
      }
    })

    // Review 4: a write through a view, or one that fires a rule, runs what the owner wrote there.
    it.each([
      ['a view over pg_settings the app role may update', `create view public.app_settings as select name, setting from pg_catalog.pg_settings;
        grant select, update on public.app_settings to "$APP"`, 'app_settings', { setting: 'left-by-A' }, { name: 'application_name' }, 'drop view public.app_settings'],
      ['a rule on a table the app role may not write, through a view it may', `create table public.prefs (k text primary key, v text); insert into public.prefs values ('application_name', 'x');
        create rule apply as on update to public.prefs do also select pg_catalog.set_config('application_name', new.v, false);
        create view public.prefs_v as select k, v from public.prefs; grant select, update on public.prefs_v to "$APP"`, 'prefs_v', { v: 'left-by-A' }, { k: 'application_name' }, 'drop view public.prefs_v; drop table public.prefs'],
      ['a rule on a table the app role may update only some columns of', `create table public.colprefs (k text primary key, v text); insert into public.colprefs values ('application_name', 'x');
        create rule apply as on update to public.colprefs do also select pg_catalog.set_config('application_name', new.v, false);
        grant select on public.colprefs to "$APP"; grant update (v) on public.colprefs to "$APP"`, 'colprefs', { v: 'left-by-A' }, { k: 'application_name' }, 'drop table public.colprefs'],
    ])('a write that runs what its owner wrote: %s', async (_label, make, table, set, where, drop) => {
      await sql.raw(make.replaceAll('$APP', inject('appRole'))).execute(t.admin)
      const pooled = t.connectAs(inject('appRole'), 'test', 1, { pipelinedWithTenant: true })
      try {
        const [column, value] = Object.entries(where)[0]!
        await withTenant(pooled, A, (trx) => (trx as unknown as Kysely<any>).updateTable(table).set(set).where(column, '=', value).execute())
        expect(await withTenant(pooled, B, async (trx) => (await sql<{ name: string }>`select current_setting('application_name') as name`.execute(trx)).rows[0]!.name)).not.toBe('left-by-A')
      } finally {
        await pooled.destroy()
        await sql.raw(drop).execute(t.admin)
      }
    })

    // Review 5: what PostgreSQL runs for the owner behind an allowed operator, or behind a foreign key.
    it.each([
      ['an explicit cast of an owner\'s type, which || runs (anytextcat casts its operand to text)', `create type public.mood as enum ('ok', 'meh');
        alter table public.skills add column mood public.mood not null default 'ok';
        create function public.mood_text(m public.mood) returns text volatile language sql as
          $$ select pg_catalog.set_config('app.leak', pg_catalog.current_setting('app.current_tenant_id', true), false); select m::name::text $$;
        create cast (public.mood as text) with function public.mood_text(public.mood)`,
      async (trx: Kysely<DB>): Promise<unknown> => trx.selectFrom('skills').select((eb) => eb('mood' as never, '||', eb.ref('name') as never).as('x')).limit(1).execute(),
      'alter table public.skills drop column mood; drop cast (public.mood as text); drop function public.mood_text(public.mood); drop type public.mood'],
      ['a rule of a table the app role may not write, run by a foreign key\'s cascade', `insert into skills (id, tenant_id, name, slug, description, category, content, author_id) values ('sA9', 'tenant-a', 'X', 'x9', 'd', 'dev', 'c', 'uA1');
        create table public.prefs (skill_id text primary key references public.skills(id) on delete cascade, v text);
        insert into public.prefs values ('sA9', 'x');
        create rule apply as on delete to public.prefs do also select pg_catalog.set_config('app.leak', pg_catalog.current_setting('app.current_tenant_id', true), false)`,
      async (trx: Kysely<DB>): Promise<unknown> => trx.deleteFrom('skills').where('id', '=', 'sA9').execute(),
      "drop table public.prefs; delete from skills where id = 'sA9'"],
    ])('%s: found, and nothing reaches the next request', async (_label, make, request, drop) => {
      await sql.raw(make).execute(t.admin)
      const pooled = t.connectAs(inject('appRole'), 'test', 1, { pipelinedWithTenant: true })
      try {
        expect((await sql<{ object: string }>`${sql.raw(SESSION_CHANGING_REACHABLE)}`.execute(pooled)).rows).not.toEqual([])
        await withTenant(pooled, A, (trx) => request(trx))
        expect(await withTenant(pooled, B, async (trx) => (await sql<{ leak: string | null }>`select current_setting('app.leak', true) as leak`.execute(trx)).rows[0]!.leak)).not.toBe(A)
      } finally {
        await pooled.destroy()
        await sql.raw(drop).execute(t.admin)
      }
    })

    // Review 6: the owner's code a session-safe statement makes PostgreSQL run. Listed (conservatively), so
    // every request on such a database keeps the end check and the clean-up.
      const ownerCode: [string, string, (trx: Kysely<any>) => Promise<unknown>, string][] = [
      ['a view over an owner SQL function of a text (stable)',
        `create function public.owner_tag(t text) returns text stable language sql as $$ ${LEAK} $$;
         create view public.owner_v as select id, public.owner_tag(name) as tag from public.skills;
         grant select on public.owner_v to "$APP"`,
        (trx) => trx.selectFrom('owner_v').select('tag').limit(1).execute(),
        'drop view public.owner_v; drop function public.owner_tag(text)'],
      ['a view calling pg_catalog.set_config directly',
        `create view public.owner_v2 as select 1 as one, pg_catalog.set_config('app.leak', 'A-was-here', false) as x;
         grant select on public.owner_v2 to "$APP"`,
        (trx) => trx.selectFrom('owner_v2').select('one').execute(),
        'drop view public.owner_v2'],
      ['a stored generated column (immutable SQL function)',
        `create function public.owner_gen(t text) returns text immutable language sql as $$ ${LEAK} $$;
         create table public.owner_gen_t (id text primary key, g text generated always as (public.owner_gen(id)) stored);
         grant select, insert on public.owner_gen_t to "$APP"`,
        (trx) => trx.insertInto('owner_gen_t').values({ id: 'x1' }).execute(),
        'drop table public.owner_gen_t; drop function public.owner_gen(text)'],
      ['a check constraint',
        `create function public.owner_chk(t text) returns boolean language sql as $$ select (${LEAK}) is not null $$;
         create table public.owner_chk_t (id text primary key check (public.owner_chk(id)));
         grant select, insert on public.owner_chk_t to "$APP"`,
        (trx) => trx.insertInto('owner_chk_t').values({ id: 'x1' }).execute(),
        'drop table public.owner_chk_t; drop function public.owner_chk(text)'],
      ['a domain check (the bound parameter is coerced to the domain)',
        `create function public.owner_dom(t text) returns boolean language sql as $$ select (${LEAK}) is not null $$;
         create domain public.owner_d as text check (public.owner_dom(value));
         create table public.owner_dom_t (id public.owner_d primary key);
         grant select, insert on public.owner_dom_t to "$APP"`,
        (trx) => trx.insertInto('owner_dom_t').values({ id: 'x1' }).execute(),
        'drop table public.owner_dom_t; drop domain public.owner_d; drop function public.owner_dom(text)'],
      ['a row-level security policy',
        `create function public.owner_pol(t text) returns boolean stable language sql as $$ select (${LEAK}) is not null $$;
         create table public.owner_pol_t (id text primary key); insert into public.owner_pol_t values ('x1');
         alter table public.owner_pol_t enable row level security;
         create policy owner_p on public.owner_pol_t using (public.owner_pol(id));
         grant select on public.owner_pol_t to "$APP"`,
        (trx) => trx.selectFrom('owner_pol_t').select('id').execute(),
        'drop table public.owner_pol_t; drop function public.owner_pol(text)'],
      ['an expression index',
        `create function public.owner_idx(t text) returns text immutable language sql as $$ ${LEAK} $$;
         create table public.owner_idx_t (id text primary key); create index owner_idx_i on public.owner_idx_t (public.owner_idx(id));
         grant select, insert on public.owner_idx_t to "$APP"`,
        (trx) => trx.insertInto('owner_idx_t').values({ id: 'x1' }).execute(),
        'drop table public.owner_idx_t; drop function public.owner_idx(text)'],
      ['a column default (documented as relied upon)',
        `create function public.owner_def() returns text language sql as $$ ${LEAK} $$;
         create table public.owner_def_t (id text primary key, d text default public.owner_def());
         grant select, insert on public.owner_def_t to "$APP"`,
        (trx) => trx.insertInto('owner_def_t').values({ id: 'x1' }).execute(),
        'drop table public.owner_def_t; drop function public.owner_def()'],
      ['a trigger (documented as relied upon)',
        `create function public.owner_trg() returns trigger language plpgsql as $$ begin perform pg_catalog.set_config('app.leak', 'A-was-here', false); return new; end $$;
         create table public.owner_trg_t (id text primary key);
         create trigger owner_t before insert on public.owner_trg_t for each row execute function public.owner_trg();
         grant select, insert on public.owner_trg_t to "$APP"`,
        (trx) => trx.insertInto('owner_trg_t').values({ id: 'x1' }).execute(),
        'drop table public.owner_trg_t; drop function public.owner_trg()'],
      ['a CHECK calling PostgreSQL\'s set_config itself',
        `create table public.owner_setchk_t (id text primary key check (pg_catalog.set_config('app.leak', id, false) is not null));
         grant select, insert on public.owner_setchk_t to "$APP"`,
        (trx) => trx.insertInto('owner_setchk_t').values({ id: 'tenant-a' }).execute(),
        'drop table public.owner_setchk_t'],
      ['a view taking a session\'s advisory lock (a "run once" helper)',
        `create function public.owner_once(k bigint) returns boolean volatile language sql as $$ select pg_catalog.pg_try_advisory_lock(k) $$;
         create view public.owner_jobs as select id, public.owner_once(4242) as mine from public.skills;
         grant select on public.owner_jobs to "$APP"`,
        (trx) => trx.selectFrom('owner_jobs').select('mine').limit(1).execute(),
        'drop view public.owner_jobs; drop function public.owner_once(bigint)'],
    ]

    it.each(ownerCode)('the owner\'s code, %s: found, and nothing reaches the next request', async (_label, make, request, drop) => {
      await sql.raw(make.replaceAll('$APP', inject('appRole'))).execute(t.admin)
      const pooled = t.connectAs(inject('appRole'), 'test', 1, { pipelinedWithTenant: true })
      try {
        expect((await sql<{ object: string }>`${sql.raw(SESSION_CHANGING_REACHABLE)}`.execute(pooled)).rows).not.toEqual([])
        await withTenant(pooled, A, (trx) => request(trx as unknown as Kysely<any>))
        expect(await withTenant(pooled, B, async (trx) => (await sql<{ leak: string | null; locks: number }>`select current_setting('app.leak', true) as leak,
          (select count(*)::int from pg_catalog.pg_locks where locktype = 'advisory' and pid = pg_catalog.pg_backend_pid()) as locks`.execute(trx)).rows[0])).toEqual({ leak: expect.not.stringMatching(/tenant-a|A-was-here/), locks: 0 })
      } finally {
        await pooled.destroy()
        await sql.raw(drop).execute(t.admin)
      }
    })

    it('a function of a row made after the connection first asked, called through attribute notation', async () => {
      const pooled = t.connectAs(inject('appRole'), 'test', 1, { pipelinedWithTenant: true })
      try {
        await withTenant(pooled, A, (trx) => trx.selectFrom('skills').select('id').execute())
        await sql.raw(`create function public.late(s skills) returns text volatile language sql as $$ select pg_catalog.set_config('app.leak', s.tenant_id, false) $$`).execute(t.admin)
        await withTenant(pooled, A, (trx) => trx.selectFrom('skills').select('skills.late' as never).limit(1).execute())
        expect(await withTenant(pooled, B, async (trx) => (await sql<{ leak: string }>`select current_setting('app.leak', true) as leak`.execute(trx)).rows[0]!.leak)).toBe('')
      } finally {
        await pooled.destroy()
        await sql`drop function public.late(skills)`.execute(t.admin)
      }
    })
  })

  describe('what a session-safe statement can reach in the database', () => {
    it('the app role can call no function that could change the session through one (attribute notation, an aggregate of the names let through, an operator, an implicit cast)', async () => {
      expect((await sql<{ f: string }>`${sql.raw(SESSION_CHANGING_REACHABLE)}`.execute(app)).rows).toEqual([])
    })

    // The check above and the one each session makes at its start can fail: with such a function,
    // withTenant keeps the end check and the clean-up for every request (what it does when the check
    // finds one), and the function's setting does not reach the next request.
    it('a volatile function of a skills row, callable by the app role: found, and the sessions that find it keep the clean-up', async () => {
      await sql.raw(`create function public.leak(s skills) returns text volatile language sql as $$ select pg_catalog.set_config('app.leak', s.tenant_id, false) $$;
        grant execute on function public.leak(skills) to public`).execute(t.admin)
      const fresh = t.connectAs(inject('appRole'), 'test', 1, { pipelinedWithTenant: true })
      try {
        expect((await sql<{ f: string }>`${sql.raw(SESSION_CHANGING_REACHABLE)}`.execute(fresh)).rows).toEqual([{ object: 'leak(skills)' }, { object: 'function leak(skills)' }])
        // Attribute notation: a reference the builder quotes, which PostgreSQL reads as leak(skills).
        await withTenant(fresh, A, (trx) => trx.selectFrom('skills').select('skills.leak' as never).limit(1).execute())
        expect(await withTenant(fresh, B, async (trx) => (await sql<{ leak: string }>`select current_setting('app.leak', true) as leak`.execute(trx)).rows[0]!.leak)).toBe('')
      } finally {
        await fresh.destroy()
        await sql`drop function public.leak(skills)`.execute(t.admin)
      }
    })

    it('writes to every table the app writes, with session-safe statements only, leave nothing on the session (settings, locks, cursors, prepared statements, LISTEN, temporary objects)', async () => {
      await withTenant(app, A, async (trx) => {
        await trx.updateTable('skills').set((eb) => ({ total_uses: eb('total_uses', '+', 1) })).where('id', '=', 'sA1').execute()
        await trx.insertInto('ratings').values({ id: 'rA9', skill_id: 'sA2', user_id: 'uA1', rating: 3 } as never).execute()
        await trx.deleteFrom('ratings').where('id', '=', 'rA9').execute()
        await trx.insertInto('usage_events').values({ id: 'eA9', tool_name: 'cli', skill_id: 'sA1', user_id: 'uA1' } as never).execute()
        await trx.updateTable('users').set({ email: 'ann2@a' }).where('id', '=', 'uA1').execute()
        await trx.updateTable('site_settings').set({ ollama_model: 'model-a2' }).where('id', '=', 'default').execute()
      })
      const left = await withTenant(app, B, async (trx) => (await sql<Record<string, number>>`select
        (select count(*)::int from pg_catalog.pg_settings where source = 'session' and name not like 'transaction\\_%') as settings,
        (select count(*)::int from pg_catalog.pg_locks where locktype = 'advisory' and pid = pg_catalog.pg_backend_pid()) as locks,
        (select count(*)::int from pg_catalog.pg_cursors where name <> '') as cursors,
        (select count(*)::int from pg_catalog.pg_prepared_statements) as prepared,
        (select count(*)::int from pg_catalog.pg_listening_channels()) as channels,
        (select count(*)::int from pg_catalog.pg_class where relnamespace = pg_catalog.pg_my_temp_schema()) as temporary`.execute(trx)).rows[0])
      expect(left).toEqual({ settings: 0, locks: 0, cursors: 0, prepared: 0, channels: 0, temporary: 0 })
    })
  })
})
