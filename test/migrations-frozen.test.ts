import { cpSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs'
import path from 'node:path'
import { sql, type Kysely } from 'kysely'
import { afterAll, describe, expect, inject, it } from 'vitest'
import { takeSchemaSnapshot } from '../src/catalog/schema-snapshot.ts'
import { migrateContract, migrateOpen, migrateTo, migrateToLatest } from '../src/migrator/migrate.ts'
import { MIGRATIONS_DIR } from '../src/migrator/migration-provider.ts'
import { withTenant } from '../src/tenancy/with-tenant.ts'
import { ROOT } from './support/cli.ts'
import { useLegacyDatabases } from './support/database.ts'
import { ALL_MIGRATION_NAMES, GATED_MIGRATION_NAMES, MIGRATION_NAMES, OPEN_MIGRATION_NAMES } from './support/migration-names.ts'
import { TEST_TENANT_KEY } from './support/tenant-key.ts'
import { A, B, seedTwoTenants } from './support/tenants.ts'

const MIGRATIONS = readdirSync(MIGRATIONS_DIR).filter((f) => /^\d{4}_.*\.ts$/.test(f)).sort()

/** What a migration may import: Kysely and the schema-free building blocks (see src/migrations/README.md). */
const ALLOWED = [/^kysely$/, /^\.\.\/online\/[a-z-]+\.ts$/]

describe('migrations are frozen: they import machinery, never the facts of the runtime', () => {
  it.each(MIGRATIONS)('%s', (file) => {
    const source = readFileSync(path.join(MIGRATIONS_DIR, file), 'utf8')
    const imports = [...source.matchAll(/^import .* from '([^']+)'/gm)].map((m) => m[1]!)
    expect(imports.length).toBeGreaterThan(0)
    expect(imports.filter((i) => !ALLOWED.some((re) => re.test(i)))).toEqual([])
  })
})

/** A later migration of the kind the next person writes: a tenth tenant table, with its own facts. */
const blocks = '../online' // (spelled apart: this file's own imports are checked by test/layout.test.ts)
const TENTH_TABLE = `import { sql, type Kysely } from 'kysely'
import { appRoleName } from '${blocks}/app-role.ts'
import { grant } from '${blocks}/grant.ts'
import { withLockRetry } from '${blocks}/lock-retry.ts'
import { rowSecurity } from '${blocks}/row-security.ts'
import { withoutStatistics } from '${blocks}/statistics.ts'
import { applySteps, revertSteps } from '${blocks}/step.ts'

const table = {
  name: 'skill_tags',
  up: (db) => withLockRetry(db, 'skills', (trx) => sql\`create table if not exists skill_tags (
    tenant_id text not null references tenants (id), id text not null, skill_id text not null, tag text not null,
    primary key (tenant_id, id), foreign key (tenant_id, skill_id) references skills (tenant_id, id) on delete cascade)\`.execute(trx)),
  down: async (db) => void (await sql\`drop table if exists skill_tags\`.execute(db)),
}
const steps = [
  table,
  rowSecurity('skill_tags', [{ name: 'tenant_isolation', condition: sql\`tenant_id = tenant_context.current_tenant()\`, check: sql\`tenant_id = nullif(tenant_context.current_tenant(), '')\`, to: async (db) => [await appRoleName(db)] }]),
  grant('skill_tags', ['select', 'insert', 'update', 'delete']),
  // No planner statistics: estimates would tell one tenant another's tags (0013 refuses tenants otherwise).
  withoutStatistics('skill_tags'),
]
export const up = (db) => applySteps(db, steps)
export const down = (db) => revertSteps(db, steps)
`

const HISTORY_DIR = path.join(ROOT, 'test/history')

/**
 * What a migration leaves behind, as a fixed text: the tables of public (columns, constraints,
 * indexes, triggers, policies, row security), the privileges on them, and the functions of
 * skills-db's schemas. The app role's name (per test run) reads as app_user.
 */
async function historySnapshot(db: Kysely<any>, appRole: string): Promise<unknown> {
  const rows = async <R>(q: ReturnType<typeof sql<R>>) => (await q.execute(db)).rows
  const state = {
    tables: await takeSchemaSnapshot(db),
    privileges: await rows(sql`select c.relname as table, r.rolname as grantee, string_agg(a.privilege_type, ',' order by a.privilege_type) as privileges
      from pg_class c, aclexplode(c.relacl) a join pg_roles r on r.oid = a.grantee
      where c.relnamespace = 'public'::regnamespace and c.relkind = 'r' and a.grantee <> c.relowner group by 1, 2 order by 1, 2`),
    functions: await rows(sql`select p.oid::regprocedure::text as name, pg_get_functiondef(p.oid) as definition
      from pg_proc p join pg_namespace n on n.oid = p.pronamespace where n.nspname in ('public', 'skills_db', 'tenant_context') order by 1`),
  }
  return JSON.parse(JSON.stringify(state).replaceAll(appRole, 'app_user'))
}

/**
 * The recorded history of `name`, compared. UPDATE_HISTORY=1 records it for a new migration, one
 * that has none yet; a recorded one is never rewritten.
 */
function expectRecorded(name: string, actual: unknown, label: string): void {
  const file = path.join(HISTORY_DIR, `${name}.json`)
  if (process.env.UPDATE_HISTORY === '1' && label === 'as written' && !existsSync(file)) {
    mkdirSync(HISTORY_DIR, { recursive: true })
    writeFileSync(file, `${JSON.stringify(actual, null, 2)}\n`)
  }
  if (!existsSync(file)) throw new Error(`test/history/${name}.json is missing: a new migration's catalog is recorded with UPDATE_HISTORY=1 npx vitest run test/migrations-frozen.test.ts`)
  expect(actual, `${name}, ${label}: the catalog it leaves differs from the one recorded in test/history/${name}.json`).toEqual(JSON.parse(readFileSync(file, 'utf8')))
}

/**
 * The catalog each migration leaves on a fresh install, compared with the one recorded when it was
 * written: a migration that changes meaning when other code changes fails here. The same with a
 * tenth tenant table added by a new migration after them.
 */
describe('the history: each migration leaves the catalog recorded when it was written', () => {
  const legacyDb = useLegacyDatabases()
  const dirs: string[] = []
  afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })))

  it('on a fresh install, with or without a tenth tenant table added by a later migration; the tenth is isolated like the nine', async () => {
    // Beside src/migrations, so the copies' relative imports of the building blocks resolve.
    const dir = mkdtempSync(path.join(MIGRATIONS_DIR, '..', '.test-migrations-'))
    dirs.push(dir)
    cpSync(MIGRATIONS_DIR, dir, { recursive: true })
    const tenth = `${String(ALL_MIGRATION_NAMES.length + 1).padStart(4, '0')}_add_skill_tags`
    writeFileSync(path.join(dir, `${tenth}.ts`), TENTH_TABLE)
    const appRole = inject('appRole')
    const [plain, extended, asWritten] = await Promise.all([legacyDb(), legacyDb(), legacyDb()])
    const options = { appRole, tenantKeys: [TEST_TENANT_KEY], allowOldAppSessions: true, timestampsAreUtc: true }
    // An expand migration written after gated ones (0019, after 0014–0018) was written for a
    // database already through them: as written, it comes among them below, in name order; on the
    // fresh install's path it comes before them, where the whole catalog is compared at the end.
    const writtenLater = MIGRATION_NAMES.filter((n) => GATED_MIGRATION_NAMES.some((gated) => gated < n))
    // Migration by migration through the expand phase (0001 is adopted, not run).
    for (const name of MIGRATION_NAMES) {
      const status = name === '0001_baseline' ? 'up-to-date' : 'applied'
      expect(await migrateTo(extended.admin, name, { ...options, migrationsDir: dir }), name).toMatchObject({ status })
      if (writtenLater.includes(name)) continue
      expect(await migrateTo(plain.admin, name, options), name).toMatchObject({ status })
      expectRecorded(name, await historySnapshot(plain.admin, appRole), 'as written')
      expectRecorded(name, await historySnapshot(extended.admin, appRole), `with ${tenth} in the folder`)
    }
    // The migrations of the phases that wait for the operator, each from a copy of the folder that
    // ends with it. 0010, written before 0011–0015, as written: right after 0009. The later ones on
    // the fresh install's path: latest, then open, then contract.
    const upTo = (last: string) => {
      const folder = mkdtempSync(path.join(MIGRATIONS_DIR, '..', '.test-migrations-'))
      dirs.push(folder)
      cpSync(MIGRATIONS_DIR, folder, { recursive: true, filter: (f) => !/^\d{4}_/.test(path.basename(f)) || path.basename(f).slice(0, -3) <= last })
      return folder
    }
    const first = '0010_contract_tenant_keys'
    expect(await migrateToLatest(asWritten.admin, { ...options, migrationsDir: upTo(first) })).toMatchObject({ status: 'applied' })
    expect(await migrateContract(asWritten.admin, { ...options, migrationsDir: upTo(first) })).toMatchObject({ status: 'applied', steps: [{ name: first }] })
    expectRecorded(first, await historySnapshot(asWritten.admin, appRole), 'as written')
    // Each later one in the order written, by its phase's command, on the database as it stood then
    // (0016 and 0017, open-phase migrations written after 0015, land on a contracted database).
    // The expand ones written after a gated one (0019) among them, in name order: the order written.
    for (const name of [...GATED_MIGRATION_NAMES.filter((n) => n !== first), ...writtenLater].sort()) {
      const migrate = OPEN_MIGRATION_NAMES.includes(name) ? migrateOpen : writtenLater.includes(name) ? migrateToLatest : migrateContract
      const outcome = await migrate(plain.admin, { ...options, migrationsDir: upTo(name) })
      expect(outcome.status === 'applied' && outcome.steps.at(-1)?.name, name).toBe(name)
      expectRecorded(name, await historySnapshot(plain.admin, appRole), 'as written')
    }
    // Contracted without opening first (every gated migration in name order: a database never
    // opened has one tenant), with a tenth tenant table: the same catalog as the fresh install's path.
    expect(await migrateContract(extended.admin, { ...options, migrationsDir: dir })).toMatchObject({ status: 'applied', steps: [...GATED_MIGRATION_NAMES, tenth].map((name) => ({ name })) })
    const { skill_tags: tags, ...rest } = await takeSchemaSnapshot(extended.admin)
    expect(rest).toEqual(await takeSchemaSnapshot(plain.admin))
    expect(tags).toMatchObject({ rowSecurity: 'forced', policies: [expect.stringMatching(/^tenant_isolation ALL to .* using \(tenant_id = tenant_context\.current_tenant\(\)\)/)] })

    await seedTwoTenants(extended.admin)
    await sql`insert into skill_tags values (${A}, 'tA', 'sA1', 'dev'), (${B}, 'tB', 'sB1', 'dev')`.execute(extended.admin)
    await sql.raw(`alter role "${appRole}" password 'test'`).execute(extended.admin)
    const app = extended.connectAs(appRole)
    const seen = await withTenant(app as never, A, async (trx) => (await sql<{ id: string }>`select id from skill_tags order by id`.execute(trx)).rows.map((r) => r.id))
    expect(seen).toEqual(['tA'])
  })
})
