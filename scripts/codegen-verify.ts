/**
 * Fails when the committed src/db-types.ts differs from what the migrated schema produces.
 * Migrates a scratch database on TEST_DATABASE_URL's server (or the embedded one), then asks
 * kysely-codegen --verify.
 */
import { generateTypes } from '../src/codegen/generate-types.ts'
import { openDb } from '../src/connection/create-db.ts'
import { withDatabase } from '../src/connection/database-url.ts'
import { adminQuery, usingScratchDatabase } from '../src/connection/scratch-database.ts'
import { usingDatabase } from '../src/connection/using-database.ts'
import { migrateToLatest } from '../src/migrator/migrate.ts'

async function verifyOn(adminUrl: string): Promise<void> {
  // Roles are cluster-wide: a name of our own, dropped afterwards.
  const appRole = `skills_${process.pid}_cg_app`
  try {
    await verifyIn(adminUrl, appRole)
  } finally {
    await adminQuery(adminUrl, `drop role if exists ${appRole}`)
  }
}

async function verifyIn(adminUrl: string, appRole: string): Promise<void> {
  await usingScratchDatabase(adminUrl, `skills_${process.pid}_cg`, async (url) => {
    const db = await openDb(url, { max: 1 })
    try {
      const outcome = await migrateToLatest(db, { appRole })
      if (outcome.status === 'error') throw new Error(`migrating the scratch database failed: ${outcome.error.message}`)
    } finally {
      await db.destroy()
    }
    await generateTypes(url, { verify: true })
  })
}

try {
  const admin = process.env.TEST_DATABASE_URL
  if (admin) await verifyOn(admin)
  else await usingDatabase({ ...process.env, DATABASE_URL: '' }, (source) => verifyOn(withDatabase(source.url, 'postgres')))
  console.log('src/db-types.ts matches the migrated schema')
} catch (error) {
  console.error(`error: ${(error as Error).message}`)
  process.exit(1)
}
