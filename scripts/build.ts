/**
 * npm run build: the published package in dist/. The TypeScript of src/ as ESM JavaScript with
 * declarations (tsc -p tsconfig.build.json), plus a copy of the generated types as text, which
 * `skills-db verify` compares a database with by default.
 */
import { execFileSync } from 'node:child_process'
import { chmodSync, copyFileSync, rmSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('../', import.meta.url))
rmSync(`${root}dist`, { recursive: true, force: true })
execFileSync(process.execPath, [`${root}node_modules/typescript/bin/tsc`, '-p', `${root}tsconfig.build.json`], { stdio: 'inherit' })
copyFileSync(`${root}src/db-types.ts`, `${root}dist/db-types.txt`)
chmodSync(`${root}dist/cli/bin.js`, 0o755)
console.log('built dist/')
