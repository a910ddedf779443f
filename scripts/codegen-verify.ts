/**
 * CI's drift check: migrates a scratch database on TEST_DATABASE_URL's server (or the embedded
 * one) to the latest migration, and fails, printing the diff, when src/db-types.ts is not what
 * kysely-codegen makes of it.
 */
import { readFileSync } from 'node:fs'
import { typesDiff } from '../src/codegen/generate-types.ts'
import { openDb } from '../src/connection/create-db.ts'
import { withDatabase } from '../src/connection/database-url.ts'
import { adminQuery, usingScratchDatabase } from '../src/connection/scratch-database.ts'
import { usingDatabase } from '../src/connection/using-database.ts'
import { migrateToLatest } from '../src/migrator/migrate.ts'
import { EXPECTED_TYPES } from '../src/cli/commands/verify.ts'

async function verifyOn(adminUrl: string): Promise<string | undefined> {
  // Roles are cluster-wide: a name of our own, dropped afterwards.
  const appRole = `skills_${process.pid}_cg_app`
  try {
    return await usingScratchDatabase(adminUrl, `skills_${process.pid}_cg`, async (url) => {
      const db = await openDb(url, { max: 1 })
      try {
        const outcome = await migrateToLatest(db, { appRole })
        if (outcome.status === 'error') throw new Error(`migrating the scratch database failed: ${outcome.error.message}`)
      } finally {
        await db.destroy()
      }
      return typesDiff(url, readFileSync(EXPECTED_TYPES, 'utf8'))
    })
  } finally {
    await adminQuery(adminUrl, `drop role if exists ${appRole}`)
  }
}

try {
  const admin = process.env.TEST_DATABASE_URL
  const diff = admin ? await verifyOn(admin) : await usingDatabase({ ...process.env, DATABASE_URL: '' }, (source) => verifyOn(withDatabase(source.url, 'postgres')))
  if (diff) {
    console.log(diff)
    console.error('error: src/db-types.ts is out of date with the migrated schema: run npm run migrate:latest and commit the regenerated file')
    process.exit(1)
  }
  console.log('src/db-types.ts matches the migrated schema')
} catch (error) {
  console.error(`error: ${(error as Error).message}`)
  process.exit(1)
}
