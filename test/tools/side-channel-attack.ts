/**
 * npx tsx test/tools/side-channel-attack.ts <admin url of a scratch database> <app role> [<app role's password>]
 *
 * The side-channel attack of test/side-channels.test.ts, against any scratch database migrated by
 * skills-db (this version or an older one, e.g. 13be881) with the test tenant key
 * (SKILLS_DB_TENANT_KEYS=test:0123456789abcdef0123456789abcdef-test-only): it adds tenants A and B
 * with rows to the database (never point it at one that matters), then, as the app role, prints per
 * context which columns' values of B it can tell apart from a value nobody holds, with an example.
 * It sets the app role's password (to `test`, or the one given) to log in as it.
 * docs/security/side-channels.md shows what it prints on 13be881 and on this version.
 */
import { sql } from 'kysely'
import { createDb } from '../../src/connection/create-db.ts'
import { ATTACK_CONTEXTS, attack, probeColumns, seedSecrets, TENANT_A } from '../support/side-channel-probes.ts'

const [adminUrl, appRole, password = 'test'] = process.argv.slice(2)
if (!adminUrl || !appRole) {
  console.error('error: usage: npx tsx test/tools/side-channel-attack.ts <admin url of a scratch database> <app role> [<password>]')
  process.exit(1)
}
const admin = createDb<any>(adminUrl, { max: 1 })
try {
  // Its own tenants A and B, in a scratch database with the default tenant alone, or from an earlier run.
  const { rows } = await sql<{ n: number; seeded: boolean }>`select count(*)::int as n, bool_or(id = ${TENANT_A}) as seeded from tenants`.execute(admin)
  if (rows[0]!.n !== 1 && !rows[0]!.seeded) throw new Error(`the database has ${rows[0]!.n} tenants: the attack adds its own A and B to a scratch database that has only the default tenant`)
  await sql`select pg_catalog.set_config('skills_db.unconfined_sessions_ok', 'on', false)`.execute(admin)
  await sql.raw(`alter role "${appRole.replace(/"/g, '""')}" password '${password.replace(/'/g, "''")}'`).execute(admin)
  if (!rows[0]!.seeded) await seedSecrets(admin)
  const columns = await probeColumns(admin, appRole)
  const app = new URL(adminUrl)
  app.username = appRole
  app.password = password
  let total = 0
  for (const context of ATTACK_CONTEXTS) {
    const leaks = await attack(app.toString(), columns, context, { limit: 100_000 })
    total += leaks.length
    const leaking = [...new Set(leaks.map((l) => l.probe.split(':')[0]!))].sort()
    console.log(`\n## ${context}: ${leaks.length} differing observations, ${leaking.length} columns`)
    if (leaking.length) console.log(leaking.join(', '))
    const example = leaks.find((l) => /Rows Removed by Filter/.test(l.held)) ?? leaks[0]
    if (example) {
      const indent = (text: string) => text.split('\n').map((line) => `    ${line}`).join('\n')
      console.log(`example (${example.settings}):\n  probe ${example.probe}\n  with B's value:\n${indent(example.held)}\n  with a value nobody holds:\n${indent(example.unheld)}`)
    }
  }
  console.log(`\n${total === 0 ? 'no side channel found' : `${total} observations depend on B's values`}`)
  process.exitCode = total === 0 ? 0 : 1
} catch (error) {
  const { message, hint } = error as { message: string; hint?: string }
  console.error(`error: ${message}${hint ? ` (${hint})` : ''}`)
  process.exitCode = 1
} finally {
  await admin.destroy()
}
