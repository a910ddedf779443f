import { sql, type Kysely, type Transaction } from 'kysely'
import { beforeAll, describe, expect, inject, it } from 'vitest'
import type { DB } from '../../src/db-types.ts'
import { parseTenantKey, signTenantContext } from '../../src/tenancy/tenant-key.ts'
import { withTenant } from '../../src/tenancy/with-tenant.ts'
import { TENANT_TABLES } from '../../fixtures/legacy.ts'
import type { TestDatabase } from './database.ts'
import { TEST_TENANT_KEY } from './tenant-key.ts'
import { A, B, rowSecurityRefusal } from './tenants.ts'

const OWNER = '"OWNER"'

/**
 * SQL an attacker writes, run as the application role inside tenant A's withTenant, as one SQL
 * injection in A's request would run it. None may show or change a row of tenant B.
 */
export const ATTACKS: [string, string][] = [
  ['set_config, session-wide', `select set_config('app.current_tenant_id', '${B}', false)`],
  ['set_config, transaction-local', `select set_config('app.current_tenant_id', '${B}', true)`],
  ['SET', `set app.current_tenant_id = '${B}'`],
  ['SET LOCAL', `set local app.current_tenant_id = '${B}'`],
  ['RESET, then SET', `reset app.current_tenant_id; set app.current_tenant_id = '${B}'`],
  ['RESET ALL', `reset all`],
  ['the switch inside one statement (lateral)', `select s.* from (select set_config('app.current_tenant_id', '${B}', false)) x, lateral (select id, tenant_id from skills) s`],
  ['a DO block that switches and copies what it sees', `create temp table loot (tenant_id text); do $$ begin perform set_config('app.current_tenant_id', '${B}', true); insert into loot select tenant_id from skills; end $$; select * from loot`],
  ['a function of its own', `create function pg_temp.peek() returns setof text language plpgsql as $$ begin perform set_config('app.current_tenant_id', '${B}', true); return query select tenant_id from skills; end $$; select pg_temp.peek() as tenant_id`],
  ['a cursor declared after the switch', `select set_config('app.current_tenant_id', '${B}', true); declare c cursor for select tenant_id from skills; fetch all from c`],
  ['a prepared statement after the switch', `select set_config('app.current_tenant_id', '${B}', true); prepare p as select tenant_id from skills; execute p`],
  ['the migrator\'s all-tenants switch', `select set_config('skills_db.all_tenants', 'on', true), set_config('app.current_tenant_id', '${B}', true)`],
  ['the mark that a session entered, forged', `select set_config('tenant_context.entered', 'on', true), set_config('app.current_tenant_id', '${B}', true)`],
  ['enter() with a guessed signature', `select tenant_context.enter('${B}', 'test:' || repeat('0', 64))`],
  ['enter() with no key id', `select tenant_context.enter('${B}', repeat('0', 64))`],
  ['enter() with a key the database does not hold', `select tenant_context.enter('${B}', 'other:' || repeat('0', 64))`],
  ['enter() with the session\'s own challenge and a guessed signature', `select tenant_context.enter('${B}', tenant_context.session_challenge(), 'test:' || repeat('0', 64))`],
  ['enter() with a made-up session challenge', `select tenant_context.enter('${B}', pg_backend_pid() || ':0', 'test:' || repeat('0', 64))`],
  ['setval on the session mark', `select setval('tenant_context.session_tenant', hashtextextended('${B}', (date_part('epoch', now()) * 1000000)::bigint))`],
  ['nextval on the session mark', `select nextval('tenant_context.session_tenant')`],
  ['restarting the session mark', `alter sequence tenant_context.session_tenant restart`],
  ['a look-alike mark in pg_temp', `create temp sequence session_tenant; set search_path = pg_temp, public; select setval('session_tenant', 1), set_config('app.current_tenant_id', '${B}', true)`],
  ['forgetting the mark, then naming B', `discard sequences; select set_config('app.current_tenant_id', '${B}', true)`],
  ['reading the keys', `select * from skills_db.tenant_context_keys`],
  ['row_security off', `set local row_security = off`],
  ['SET ROLE to the owner', `set role ${OWNER}`],
  ['ending the transaction, then naming B', `commit; select set_config('app.current_tenant_id', '${B}', false)`],
]

/** Per table, B's rows as a role that bypasses row security sees them: no attack may change them. */
async function snapshotB(admin: Kysely<any>): Promise<Record<string, string>> {
  const out: Record<string, string> = {}
  for (const table of [...TENANT_TABLES, 'audit_logs', 'tenants']) {
    const where = table === 'tenants' ? sql`id = ${B}` : sql`tenant_id = ${B}`
    const { rows } = await sql<{ r: string }>`select coalesce(string_agg(to_jsonb(x)::text, ',' order by to_jsonb(x)::text), '') as r from ${sql.table(table)} x where ${where}`.execute(admin)
    out[table] = rows[0]!.r
  }
  return out
}

export interface InjectionSubject {
  /** The application role's connection, a pool of one: every withTenant gets the session the one before it used. */
  app(): Kysely<DB>
  /** A role that bypasses row security, to see B's rows as they are. */
  admin(): Kysely<any>
  /** Another pool of one of the application role: another session. */
  connect(): Kysely<DB>
  /** The role that owns the tables, which the application role must not become. */
  ownerRole(): string
  /** The application role's name (default: this run's). */
  appRole?(): string
  /** On Citus, row security errors name the shard (`"audit_logs_102040"`), not the table. */
  shardNames?: boolean
  /** Attacks only this database offers (Citus's own functions and shards), after the common ones. */
  moreAttacks?: [string, string][]
}

/** The subject on a test database of this run: its app role (`app()`, a pool of one of it) and owner. */
export function onTestDatabase(t: TestDatabase, app: () => Kysely<DB>): InjectionSubject {
  return { app, admin: () => t.admin, connect: () => t.connectAs(inject('appRole'), 'test', 1), ownerRole: () => inject('ownerRole') }
}

/**
 * The injection suite: SQL an attacker writes, run as the application role inside tenant A's
 * withTenant, and every read and write of B's rows tried after it. On a database seeded with
 * seedTwoTenants; run on the expand schema, the contracted one, and on Citus.
 */
export function describeInjectionSuite(subject: InjectionSubject): void {
  describe('SQL injected inside tenant A\'s withTenant cannot reach tenant B', () => {
    const key = parseTenantKey(TEST_TENANT_KEY, 'TEST_TENANT_KEY')
    const refused = (table: string) => rowSecurityRefusal(table, { shardNames: subject.shardNames, prefix: '42501: ' })
    let bRows: Record<string, string>
    beforeAll(async () => {
      bRows = await snapshotB(subject.admin())
    })

    /** Every read and write of B's rows the attacker would try next, in the same transaction; what worked. */
    async function reachB(trx: Transaction<DB>): Promise<string[]> {
      const reached: string[] = []
      // Each probe in a savepoint, rolled back: a refused one (an error) must not end the transaction
      // for the next. An attack that ended the transaction leaves none: its probes then run on their
      // own, and whatever they changed stays, for snapshotB to see.
      const probe = async (label: string, statement: ReturnType<typeof sql<{ tenant_id?: string; n?: number }>>) => {
        const inTransaction = await sql`savepoint probe`.execute(trx).then(() => true, () => false)
        try {
          const r = await statement.execute(trx)
          if (r.rows.some((row) => row.tenant_id === B || (row.n ?? 0) > 0)) reached.push(label)
        } catch {
          // refused: what we want
        }
        if (inTransaction) await sql`rollback to savepoint probe`.execute(trx)
      }
      for (const table of [...TENANT_TABLES, 'audit_logs', 'tenants']) {
        const column = table === 'tenants' ? 'id' : 'tenant_id'
        await probe(`read ${table}`, sql`select count(*)::int as n from ${sql.table(table)} where ${sql.ref(column)} = ${B}`)
      }
      await probe('update skills of B', sql`update skills set name = 'pwned' where tenant_id = ${B} returning tenant_id`)
      await probe('delete ratings of B', sql`delete from ratings where tenant_id = ${B} returning tenant_id`)
      await probe('insert a row labelled B', sql`insert into usage_events (id, tenant_id, tool_name) values ('pwn', ${B}, 'x') returning tenant_id`)
      await probe('insert without tenant_id', sql`insert into users (id, email) values ('pwn', 'p@p') returning tenant_id`)
      await probe('audit row of B', sql`insert into audit_logs (action) values ('pwn') returning tenant_id`)
      return reached
    }

    it.each([...ATTACKS, ...(subject.moreAttacks ?? [])])('%s', async (_label, attack) => {
      const statement = attack.replace(OWNER, `"${subject.ownerRole()}"`)
      let reached: string[] = []
      await withTenant(subject.app(), A, async (trx) => {
        await sql`savepoint attack`.execute(trx).catch(() => {})
        try {
          // What the attack itself returns counts too (the lateral form reads in the same statement).
          const { rows } = await sql.raw<{ tenant_id?: string }>(statement).execute(trx)
          if (rows.some((r) => r.tenant_id === B)) return void (reached = ['the attack\'s own result'])
        } catch {
          await sql`rollback to savepoint attack`.execute(trx).catch(() => {})
        }
        reached = await reachB(trx)
        // An attack that ends the transaction fails the request (what it reached is checked below).
      }).catch(failingOnlyWith(/withTenant: (SQL in fn ended the transaction|no tenant was entered any more)/))
      expect(reached).toEqual([])
      expect(await snapshotB(subject.admin())).toEqual(bRows)
      // Nothing the attack left reaches the next user of the connection (the same session).
      expect(await withTenant(subject.app(), B, async (trx) => (await sql<{ n: number }>`select count(*)::int as n from skills where tenant_id <> ${B}`.execute(trx)).rows[0]!.n)).toBe(0)
    })

    it('B\'s signature from an earlier transaction does not let a later transaction enter B (replay)', async () => {
      // The strongest replay: a real signature of B, as withTenant made it for an earlier transaction.
      const earlier = await withTenant(subject.app(), B, async (trx) => {
        const { rows } = await sql<{ c: string }>`select tenant_context.challenge() as c`.execute(trx)
        return signTenantContext(key, B, rows[0]!.c)
      })
      const replayed = await withTenant(subject.app(), A, async (trx) => {
        await sql`savepoint s`.execute(trx)
        await expect(sql`select tenant_context.enter(${B}::text, ${earlier}::text)`.execute(trx)).rejects.toThrow(/not valid for this transaction/)
        await sql`rollback to savepoint s`.execute(trx)
        return reachB(trx)
      })
      expect(replayed).toEqual([])
      // Nor outside withTenant, on the same session, with B named for the whole session.
      const outside = await subject.app().transaction().execute(async (trx) => {
        await sql`select set_config('app.current_tenant_id', ${B}, false)`.execute(trx)
        await sql`savepoint s`.execute(trx)
        await expect(sql`select tenant_context.enter(${B}::text, ${earlier}::text)`.execute(trx)).rejects.toThrow(/not valid for this transaction/)
        await sql`rollback to savepoint s`.execute(trx)
        return reachB(trx)
      })
      expect(outside).toEqual([])
      await sql`discard all`.execute(subject.app())
    })

    it('B\'s signature over this session\'s challenge (0019), once used, does not enter B again, nor after the challenge is asked anew', async () => {
      // What withTenant does for B's request on this session, the signature made here with the app's key.
      let used: { challenge: string; signature: string } | undefined
      await withTenant(subject.app(), B, async (trx) => {
        const { rows } = await sql<{ c: string | null }>`select tenant_context.session_challenge() as c`.execute(trx)
        if (rows[0]!.c === null) return // Citus: no session challenge, and enter() with one answers TC001 (below)
        used = { challenge: rows[0]!.c, signature: signTenantContext(key, B, rows[0]!.c) }
        await sql`select tenant_context.enter(${B}::text, ${used.challenge}::text, ${used.signature}::text)`.execute(trx)
      })
      const replay = used ?? { challenge: '1:1', signature: signTenantContext(key, B, '1:1') }
      let reached: string[] = ['not run']
      // Asking for a new challenge moves the session's mark: A's own context is gone with it, and
      // the request fails at its end (it reached nothing meanwhile).
      await withTenant(subject.app(), A, async (trx) => {
        for (const reset of [false, true]) {
          await sql`savepoint s`.execute(trx)
          if (reset) await sql`select tenant_context.session_challenge()`.execute(trx)
          await expect(sql`select tenant_context.enter(${B}::text, ${replay.challenge}::text, ${replay.signature}::text)`.execute(trx))
            .rejects.toThrow(/not this session's current one|entered with the challenge of its transaction/)
          await sql`rollback to savepoint s`.execute(trx)
        }
        reached = await reachB(trx)
      }).catch(failingOnlyWith(/no tenant was entered any more/))
      expect(reached).toEqual([])
    })

    it('a signature for this very transaction but another session does not enter B', async () => {
      const other = subject.connect()
      const stolen = await other.transaction().execute(async (trx) => {
        const { rows } = await sql<{ c: string }>`select tenant_context.challenge() as c`.execute(trx)
        return signTenantContext(key, B, rows[0]!.c)
      })
      const reached = await withTenant(subject.app(), A, async (trx) => {
        await sql`savepoint s`.execute(trx)
        await expect(sql`select tenant_context.enter(${B}::text, ${stolen}::text)`.execute(trx)).rejects.toThrow(/not valid for this transaction/)
        await sql`rollback to savepoint s`.execute(trx)
        return reachB(trx)
      })
      expect(reached).toEqual([])
    })

    /**
     * The app role may not create temporary objects (0012), which closes the attacks below at their
     * first statement; given TEMPORARY back (as an operator might), they must fail all the same.
     */
    async function withTemporary<T>(fn: () => Promise<T>): Promise<T> {
      const role = sql.id(subject.appRole?.() ?? inject('appRole'))
      const { rows } = await sql<{ db: string }>`select current_database() as db`.execute(subject.admin())
      await sql`grant temporary on database ${sql.id(rows[0]!.db)} to ${role}`.execute(subject.admin())
      try {
        return await fn()
      } finally {
        await sql`revoke temporary on database ${sql.id(rows[0]!.db)} from ${role}`.execute(subject.admin())
      }
    }

    it('a temporary object is refused to the app role', async () => {
      for (const statement of [`create temp table t (id int)`, `create function pg_temp.f() returns int language sql as 'select 1'`, `create domain pg_temp.text as integer`]) {
        await expect(withTenant(subject.app(), A, (trx) => sql.raw(statement).execute(trx))).rejects.toThrow(/permission denied to create temporary tables|permission denied for schema pg_temp/)
      }
    })

    it.each([
      ['a prepared statement', `prepare carry as select tenant_id from skills`, `execute carry`],
      ['a function of its own with a cached plan', `create function pg_temp.carry() returns setof text language plpgsql as $$ begin return query select tenant_id from skills; end $$; select pg_temp.carry()`, `select pg_temp.carry() as tenant_id`],
      ['a WITH HOLD cursor', `declare carry cursor with hold for select tenant_id from skills`, `fetch all from carry`],
    ])('%s made in A\'s transaction shows none of A\'s rows in B\'s later one', async (_label, make, use) => withTemporary(async () => {
      await withTenant(subject.app(), A, async (trx) => { await sql.raw(make).execute(trx) })
      const seen = await withTenant(subject.app(), B, async (trx) => {
        await sql`savepoint s`.execute(trx)
        try {
          return (await sql.raw<{ tenant_id: string }>(use).execute(trx)).rows.map((r) => r.tenant_id)
        } catch (error) {
          await sql`rollback to savepoint s`.execute(trx)
          return [(error as Error).message]
        }
      })
      // Gone with A's session state (DISCARD ALL), so B's attempt to use it fails.
      expect(seen).toEqual([expect.stringMatching(/does not exist/)])
    }))

    // A SECURITY DEFINER function without a SET clause looks a declared type up through the caller's
    // search_path, where pg_temp comes first for types: a domain named like it, whose CHECK runs as
    // the owner (an outside review read the tenant keys so through a draft of 0021 that declared
    // `record`). The tenant context's functions name none, or pin search_path with pg_temp last.
    it('look-alike types in pg_temp, made before a fresh session first calls them, run in none of the tenant context\'s functions', () => withTemporary(async () => {
      const looks = ['record', 'text', 'bool', 'int8', 'regclass', 'bytea']
      const seen: string[] = []
      // A fresh session of the app role, outside withTenant (SQL injected into a query of the app's
      // own on the pool): the functions are compiled, and their declared types looked up, after.
      const fresh = subject.connect()
      try {
        await fresh.connection().execute(async (conn) => {
          if (subject.shardNames) await sql`set citus.enable_ddl_propagation = off`.execute(conn)
          await sql.raw(`create function pg_temp.caught(v text) returns boolean language plpgsql as $$ begin raise exception 'look-alike ran as %', current_user; end $$`).execute(conn)
          for (const name of looks) await sql.raw(`create domain pg_temp.${name} as pg_catalog.text check (pg_temp.caught(value))`).execute(conn)
          for (const call of [sql`select tenant_context.session_challenge()`, sql`select tenant_context.enter('x', '1:1', 'k:x')`, sql`select tenant_context.enter('x', 'k:x')`,
            sql`select tenant_context.current_tenant()`, sql`select tenant_context.challenge()`, sql`select tenant_context.end_request(false)`, sql`select tenant_context.finish_request()`]) {
            await call.execute(conn).catch((error: Error) => seen.push(error.message))
          }
        })
      } finally {
        await fresh.destroy()
      }
      expect(seen.filter((m) => /look-alike ran/.test(m))).toEqual([])
      expect((await withTenant(subject.app(), B, (trx) => trx.selectFrom('skills').select('tenant_id').execute())).every((r) => r.tenant_id === B)).toBe(true)
    }))

    it('a hostile search_path with look-alike types, set before current_tenant() is first compiled, changes nothing', () => withTemporary(async () => {
      // A fresh session, so current_tenant() is compiled under the attacker's search_path (on Citus,
      // fresh on the coordinator only: the workers' connections are cached).
      const fresh = subject.connect()
      let seen: { own: string[]; named: string[] } | undefined
      // Naming B in the setting leaves A's context gone: the request fails at its end.
      await withTenant(fresh, A, async (trx) => {
        // (Citus would send the CREATE DOMAIN to the workers, and refuse it there: kept on the coordinator.)
        if (subject.shardNames) await sql`set local citus.enable_ddl_propagation = off`.execute(trx)
        await sql.raw(`create domain pg_temp.text as integer; create domain pg_temp.int8 as integer; create domain pg_temp.regclass as integer;
          set local search_path = pg_temp, pg_catalog, public`).execute(trx)
        const own = (await sql<{ tenant_id: string }>`select tenant_id from skills`.execute(trx)).rows.map((r) => r.tenant_id)
        await sql`select set_config('app.current_tenant_id', ${B}, true)`.execute(trx)
        const named = (await sql<{ tenant_id: string }>`select tenant_id from skills`.execute(trx)).rows.map((r) => r.tenant_id)
        seen = { own: [...new Set(own)], named }
      }).catch(failingOnlyWith(/no tenant was entered any more/))
      // On Citus the workers keep the tenant enter() propagated, and set_config() does not reach
      // them: A's rows or none (the isolation matrix's tampered contexts), never B's.
      if (subject.shardNames) expect([...new Set(seen!.named)]).toBeOneOf([[], [A]])
      else expect(seen).toEqual({ own: [A], named: [] })
      expect(seen!.own).toEqual([A])
    }))

    it('what the database answers about B is the same whatever the guess: audit actors, tenant existence', async () => {
      const answers = await withTenant(subject.app(), A, async (trx) => {
        const attempt = async (statement: ReturnType<typeof sql>) => {
          await sql`savepoint s`.execute(trx)
          try {
            await statement.execute(trx)
            return 'ok'
          } catch (error) {
            return `${(error as { code?: string }).code}: ${(error as Error).message}`
          } finally {
            await sql`rollback to savepoint s`.execute(trx)
          }
        }
        return {
          // A row for B naming B's user, and naming nobody's: row security refuses both alike.
          realActor: await attempt(sql`insert into audit_logs (action, tenant_id, actor_id) values ('probe', ${B}, 'uB1')`),
          madeUpActor: await attempt(sql`insert into audit_logs (action, tenant_id, actor_id) values ('probe', ${B}, 'nobody')`),
          tenantExists: await attempt(sql`select tenant_context.tenant_is_active(${B})`),
        }
      })
      expect(answers.realActor).toEqual(refused('audit_logs'))
      expect(answers.madeUpActor).toBe(answers.realActor)
      expect(answers.tenantExists).toBe('42501: permission denied for function tenant_is_active')
    })

    it('the suite has teeth: B\'s own withTenant does reach B\'s rows with the same probes', async () => {
      await expect(withTenant(subject.app(), B, async (trx) => {
        expect(await reachB(trx)).toEqual(expect.arrayContaining(['read skills', 'read tenants', 'read audit_logs', 'update skills of B', 'delete ratings of B', 'insert a row labelled B', 'insert without tenant_id', 'audit row of B']))
        throw Object.assign(new Error('rollback'), { rollback: true })
      })).rejects.toMatchObject({ rollback: true })
    })
  })
}

/** A request's rejection handler that lets through only the failure `expected` names. */
const failingOnlyWith = (expected: RegExp) => (error: Error) => {
  if (!expected.test(error.message)) throw error
}
