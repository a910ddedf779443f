/** An app instance booting: migrateToLatest() and print the outcome as JSON (used by concurrency tests). */
import { createDb } from '../../src/connection/create-db.ts'
import { migrateToLatest } from '../../src/migrator/migrate.ts'

const db = createDb<any>(process.env.DATABASE_URL!, { max: 2 })
const outcome = await migrateToLatest(db, { appRole: process.env.APP_ROLE ?? 'app_user' })
await db.destroy()
console.log(JSON.stringify(outcome))
process.exit(outcome.status === 'error' ? 1 : 0)
