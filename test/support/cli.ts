import { spawn, type ChildProcess } from 'node:child_process'
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
  /** A module the child imports before the entry point (a test instrument, e.g. test/faults/freeze-at-line.ts). */
  preload?: string
  /** Called with the child's whole output so far on each chunk of it (its progress lines say where it is): the kill trials act on it. */
  onStdout?: (stdout: string, child: ChildProcess) => void
}

/** Runs a TypeScript entry point in a child process: the one way tests run the CLI. */
export function runScript(args: string[], env: Record<string, string | undefined>, { script = 'src/cli/bin.ts', cwd = ROOT, preload, onStdout }: RunOptions = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    // tsx by its path: the child may run in another directory (where the app's package.json is).
    const imports = ['--import', TSX, ...(preload ? ['--import', pathToFileURL(path.resolve(ROOT, preload)).href] : [])]
    const child = spawn(process.execPath, [...imports, path.resolve(ROOT, script), ...args], {
      cwd,
      env: { ...process.env, DATABASE_URL: undefined, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => {
      stdout += d
      onStdout?.(stdout, child)
    })
    child.stderr.on('data', (d) => (stderr += d))
    child.on('error', reject)
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }))
  })
}
