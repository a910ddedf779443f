import { spawn } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

export const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const TSX = pathToFileURL(path.join(ROOT, 'node_modules/tsx/dist/loader.mjs')).href

export interface CliResult {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs a TypeScript entry point (default: the skills-db CLI, as the npm scripts run it) in a child process. */
export function runScript(args: string[], env: Record<string, string | undefined>, script = 'src/cli/bin.ts', cwd = ROOT): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    // tsx by its path: the child may run in another directory (where the app's package.json is).
    const child = spawn(process.execPath, ['--import', TSX, path.resolve(ROOT, script), ...args], {
      cwd,
      env: { ...process.env, DATABASE_URL: undefined, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
  })
}
