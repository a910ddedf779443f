import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const run = promisify(execFile)
const ROOT = fileURLToPath(new URL('../../', import.meta.url))
export const DB_TYPES_FILE = fileURLToPath(new URL('../db-types.ts', import.meta.url))

/**
 * Regenerates src/db-types.ts from the live schema with kysely-codegen: only `public` (the app's
 * tables; the migrator's bookkeeping lives in its own schema). With `verify`, fails instead of
 * writing when the committed file differs.
 */
export async function generateTypes(url: string, { verify = false, outFile = DB_TYPES_FILE } = {}): Promise<void> {
  const args = [
    '--dialect', 'postgres',
    // Read from the environment, so the password never shows in the process list.
    '--url', 'env(SKILLS_DB_CODEGEN_URL)',
    '--include-pattern', 'public.*',
    '--out-file', outFile,
    '--log-level', 'error',
    ...(verify ? ['--verify'] : []),
  ]
  try {
    await run(`${ROOT}node_modules/.bin/kysely-codegen`, args, {
      cwd: ROOT,
      env: { ...process.env, SKILLS_DB_CODEGEN_URL: url },
    })
  } catch (error) {
    const output = `${(error as { stdout?: string }).stdout ?? ''}${(error as { stderr?: string }).stderr ?? ''}`.trim()
    throw new Error(
      verify
        ? `src/db-types.ts is out of date with the migrated schema: run npm run migrate:latest and commit the regenerated file`
        : `kysely-codegen failed: ${output.split('\n').at(-1) ?? (error as Error).message}`,
    )
  }
}
