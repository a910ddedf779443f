/** Runs the embedded PostgreSQL of `npm run migrate:latest` in the foreground until Ctrl-C. */
import { redactUrl } from '../src/connection/database-url.ts'
import { usingDatabase } from '../src/connection/using-database.ts'

await usingDatabase({ ...process.env, DATABASE_URL: '' }, async (source) => {
  console.log(`embedded PostgreSQL is up: ${redactUrl(source.url)} (password: postgres); Ctrl-C stops it`)
  await new Promise(() => {})
}).catch((error: Error) => {
  console.error(`error: ${error.message}`)
  process.exit(1)
})
