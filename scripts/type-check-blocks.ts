/**
 * What docs:check (scripts/check-docs.ts) and docs:examples (scripts/check-examples.ts) share: code
 * from the docs, each block type-checked as a module of its own against the built package, its
 * problems reported at the block's place in the file it came from.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import ts from 'typescript'

export const ROOT = fileURLToPath(new URL('../', import.meta.url))
export const DIST_TYPES = path.join(ROOT, 'dist/index.d.ts')

/** kysely-ctl is no dependency of this repository (the consumer test runs the README's config
 * against the real one); a block that imports it is checked against this much of it. */
export const STUBS = `declare module 'kysely-ctl' { export function defineConfig<T>(config: T): T }\n`

/** A block of code from `file`; `line` is the file's line of the block's first line. */
export interface Block { file: string; line: number; code: string }
export interface Problem { file: string; line: number; message: string }

/**
 * Writes each block as a module into a temporary folder, beside `extra` (file name → text: stubs,
 * a preamble), and type-checks them: strict, ES2022, top-level await allowed, `import … from
 * 'skills-db'` resolved to this checkout's dist/index.d.ts (run `npm run build` first), any other
 * package to this checkout's node_modules.
 */
export function typeCheck(blocks: Block[], extra: Record<string, string> = {}): Problem[] {
  const dir = mkdtempSync(path.join(tmpdir(), 'skills-db-docs-'))
  try {
    const modules = new Map<string, Block>()
    blocks.forEach((block, i) => {
      const name = path.join(dir, `block-${i}.ts`)
      writeFileSync(name, block.code + '\n')
      modules.set(name, block)
    })
    const extraFiles = Object.entries(extra).map(([name, text]) => {
      writeFileSync(path.join(dir, name), text)
      return path.join(dir, name)
    })
    const options: ts.CompilerOptions = {
      target: ts.ScriptTarget.ES2022,
      module: ts.ModuleKind.ES2022,
      moduleResolution: ts.ModuleResolutionKind.Bundler,
      moduleDetection: ts.ModuleDetectionKind.Force,
      lib: ['lib.es2023.d.ts'],
      strict: true,
      noEmit: true,
      skipLibCheck: true,
      types: ['node'],
      typeRoots: [path.join(ROOT, 'node_modules/@types')],
      // The blocks live outside the repository: their packages are this checkout's.
      paths: { 'skills-db': [DIST_TYPES], '*': [path.join(ROOT, 'node_modules/*'), path.join(ROOT, 'node_modules/@types/*')] },
    }
    const program = ts.createProgram([...modules.keys(), ...extraFiles], options)
    return ts.getPreEmitDiagnostics(program).map((d) => {
      const message = ts.flattenDiagnosticMessageText(d.messageText, ' ')
      const block = d.file && modules.get(path.normalize(d.file.fileName))
      if (!d.file || !block) return { file: d.file?.fileName ?? 'tsc', line: 0, message }
      const { line } = d.file.getLineAndCharacterOfPosition(d.start ?? 0)
      return { file: block.file, line: block.line + line, message }
    })
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
}
