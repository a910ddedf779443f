/**
 * npm run example: the marketplace on the embedded development server. Migrates it (latest, then the
 * open phase, which sign-up needs), uses the development keys in .data/dev-keys.env (made on first
 * use), gives the app role a development password, and serves until Ctrl-C.
 */
import { randomBytes } from 'node:crypto'
import { sql } from 'kysely'
import { migrateOpen, migrateToLatest, openDb } from '../../src/index.ts'
import { applyDevKeys, devKeysFile } from '../../src/connection/dev-keys.ts'
import { usingDatabase } from '../../src/connection/using-database.ts'
import { startMarketplace } from './app.ts'

const APP_ROLE = 'app_user'
const APP_PASSWORD = 'dev'

if (process.env.DATABASE_URL) {
  // Its keys and the app role's password are the operator's: this script would set both.
  console.error('error: npm run example runs on the embedded development server only: unset DATABASE_URL (against your own database, call startMarketplace from examples/marketplace/app.ts with the app role\'s URL and your keys)')
  process.exit(1)
}
const port = Number(process.env.EXAMPLE_PORT ?? 3000)
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error(`error: EXAMPLE_PORT "${process.env.EXAMPLE_PORT}" is not a port number`)
  process.exit(1)
}

// Keys the environment sets win, as for the CLI; the rest come from .data/dev-keys.env.
if (applyDevKeys(process.env, devKeysFile()).created) console.log('generated the development keys in .data/dev-keys.env')
const tenantKey = process.env.SKILLS_DB_TENANT_KEY!
const migratorKeys = (process.env.SKILLS_DB_TENANT_KEYS ?? tenantKey).split(',')

await usingDatabase({ ...process.env, DATABASE_URL: '' }, async (source) => {
  console.log(`embedded PostgreSQL on port ${source.embedded!.port} (data in ${source.embedded!.dataDir})`)
  // The migrator's connection is a superuser's: it must be closed before serving, since tenants are
  // not created while one is connected (0005's guard against an unconfined single-tenant app).
  const migrator = await openDb<any>(source.url, { max: 1, applicationName: 'skills-db migrator' })
  try {
    for (const migrate of [migrateToLatest, migrateOpen]) {
      const outcome = await migrate(migrator, { tenantKeys: migratorKeys })
      if (outcome.status === 'error') throw new Error(`${outcome.error.migration ?? 'migrating'}: ${outcome.error.message}`)
      console.log(`${migrate === migrateOpen ? 'open phase' : 'latest'}: ${outcome.steps.length} migration(s) applied`)
    }
    await sql.raw(`alter role ${APP_ROLE} password '${APP_PASSWORD}'`).execute(migrator)
  } finally {
    await migrator.destroy()
  }
  const appUrl = new URL(source.url)
  appUrl.username = APP_ROLE
  appUrl.password = APP_PASSWORD
  const app = await startMarketplace({ databaseUrl: appUrl.toString(), port })
  printTryLines(app.url)
  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve)
    process.once('SIGTERM', resolve)
  })
  await app.close()
  console.log('stopped')
}).catch((error: Error) => {
  console.error(`error: ${error.message.split('\n')[0]}`)
  process.exit(1)
})

/** Two lines to paste into a shell: a sign-up that shows its answer and keeps the API key in $KEY, and the tenant's skills with it. */
function printTryLines(url: string): void {
  // A new slug each start: the lines work again after a restart, when the last one's slug is taken.
  const slug = `acme-${randomBytes(2).toString('hex')}`
  const json = `-H 'content-type: application/json'`
  const auth = `-H "authorization: Bearer $KEY"`
  // Shows the answer, then keeps one field of it in a shell variable (no jq needed).
  const keep = (variable: string, field: string) => `; echo "$R"; ${variable}=$(echo "$R" | sed -n 's/.*"${field}":"\\([^"]*\\)".*/\\1/p')`
  console.log(`the marketplace listens on ${url} as ${APP_ROLE}; Ctrl-C stops it (and the embedded server). Try:

R=$(curl -s ${url}/signup ${json} -d '{"name":"Acme","slug":"${slug}","email":"ann@acme.example"}')${keep('KEY', 'apiKey')}
curl -s ${url}/t/${slug}/skills ${auth}

then a skill, and a rating of it (audited):

R=$(curl -s ${url}/t/${slug}/skills ${auth} ${json} -d '{"name":"Code review"}')${keep('SKILL', 'id')}
curl -s ${url}/t/${slug}/skills/$SKILL/ratings ${auth} ${json} -d '{"rating":5}'`)
}
