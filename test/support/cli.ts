import { spawn } from 'node:child_process'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

export const ROOT = fileURLToPath(new URL('../../', import.meta.url))
const TSX = pathToFileURL(path.join(ROOT, 'node_modules/tsx/dist/loader.mjs')).href

export interface CliResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

export interface RunOptions {
  /** The entry point (default: the skills-db CLI, as the npm scripts run it). */
  script?: string
  cwd?: string
  /** SIGKILL the child `delayMs` after its output first matches `marker` (its progress lines say where it is). */
  killOn?: { marker: RegExp; delayMs: number }
}

/** Runs a TypeScript entry point in a child process: the one way tests run the CLI. */
export function runScript(args: string[], env: Record<string, string | undefined>, { script = 'src/cli/bin.ts', cwd = ROOT, killOn }: RunOptions = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    // tsx by its path: the child may run in another directory (where the app's package.json is).
    const child = spawn(process.execPath, ['--import', TSX, path.resolve(ROOT, script), ...args], {
      cwd,
      env: { ...process.env, DATABASE_URL: undefined, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    let armed = killOn !== undefined
    child.stdout.on('data', (d) => {
      stdout += d
      if (armed && killOn!.marker.test(stdout)) {
        armed = false
        setTimeout(() => child.kill('SIGKILL'), killOn!.delayMs)
      }
    })
    child.stderr.on('data', (d) => (stderr += d))
    child.on('error', reject)
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }))
  })
}
