/**
 * npm run docs:check: the docs' code is code, and their links lead somewhere. For README.md and
 * every .md under docs/ (docs/api/ aside: it is generated):
 *
 * - each ```ts or ```typescript block is written as a module of its own into a temporary folder and
 *   type-checked (strict, ES2022, top-level await allowed) against the built package: `import …
 *   from 'skills-db'` is this checkout's dist/index.d.ts, so run `npm run build` first. The one rule:
 *   **a ts block is a complete module** (its imports, and a `declare const db: …` for what it
 *   assumes). A fragment that cannot be one is fenced as ```text; shell is ```sh, SQL ```sql.
 * - each relative link, `[x](docs/app.md#anchor)` or `![x](../src/…)`, names a file or folder
 *   that exists, and its #anchor a heading of that file (GitHub's slugs).
 *
 * Each problem prints as `<file>:<line>: <what is wrong>`; the exit code is 1 when there is one.
 */
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs'
import path from 'node:path'
import { DIST_TYPES, ROOT, STUBS, typeCheck, type Block, type Problem } from './type-check-blocks.ts'

function markdownFiles(): string[] {
  const docs = readdirSync(path.join(ROOT, 'docs'), { recursive: true, encoding: 'utf8' })
    .filter((f) => f.endsWith('.md') && !f.startsWith(`api${path.sep}`)).map((f) => path.join('docs', f))
  return ['README.md', ...docs.sort()]
}

/** The ts blocks of a file, each with the line of its first line of code. */
function tsBlocks(file: string, lines: string[]): Block[] {
  const blocks: Block[] = []
  let open: { lang: string; start: number; body: string[] } | undefined
  lines.forEach((text, i) => {
    const fence = /^\s*```(\S*)/.exec(text)
    if (!open) {
      if (fence) open = { lang: fence[1] ?? '', start: i + 2, body: [] }
    } else if (fence && fence[1] === '') {
      if (open.lang === 'ts' || open.lang === 'typescript') blocks.push({ file, line: open.start, code: open.body.join('\n') })
      open = undefined
    } else {
      open.body.push(text)
    }
  })
  return blocks
}

/** GitHub's anchor for a heading: lowercased, punctuation but - and _ dropped, spaces as -. */
function slug(heading: string): string {
  const text = heading.replace(/\[([^\]]*)\]\([^)]*\)/g, '$1')
  return text.trim().toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, '').replace(/\s/g, '-')
}

/** The anchors of a markdown file's headings (outside code blocks), repeats numbered as GitHub does. */
function anchors(file: string): Set<string> {
  const seen = new Map<string, number>()
  const found = new Set<string>()
  let inCode = false
  for (const text of readFileSync(file, 'utf8').split('\n')) {
    if (/^\s*```/.test(text)) inCode = !inCode
    const heading = !inCode && /^#{1,6}\s+(.*)$/.exec(text)
    if (!heading) continue
    const base = slug(heading[1] ?? '')
    const n = seen.get(base) ?? 0
    seen.set(base, n + 1)
    found.add(n === 0 ? base : `${base}-${n}`)
  }
  return found
}

function brokenLinks(file: string, lines: string[]): { checked: number; problems: Problem[] } {
  const problems: Problem[] = []
  let checked = 0
  let inCode = false
  lines.forEach((text, i) => {
    if (/^\s*```/.test(text)) inCode = !inCode
    if (inCode) return
    for (const m of text.replace(/`[^`]*`/g, '').matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)) {
      const target = m[1] ?? ''
      if (/^[a-z][a-z+.-]*:/i.test(target)) continue // https:, mailto:
      checked++
      const [where = '', anchor] = target.split('#')
      const resolved = where === '' ? path.join(ROOT, file) : path.resolve(ROOT, path.dirname(file), decodeURI(where))
      const say = (message: string) => problems.push({ file, line: i + 1, message })
      if (!existsSync(resolved)) say(`link to ${target}: no such file (relative to ${path.dirname(file)}/)`)
      else if (anchor !== undefined && (!resolved.endsWith('.md') || statSync(resolved).isDirectory())) say(`link to ${target}: an anchor into a file that has no headings`)
      else if (anchor !== undefined && !anchors(resolved).has(anchor)) say(`link to ${target}: no heading of ${path.relative(ROOT, resolved)} has the anchor #${anchor}`)
    }
  })
  return { checked, problems }
}

if (!existsSync(DIST_TYPES)) {
  console.error('dist/index.d.ts is missing: run `npm run build` first (the blocks are checked against the built package)')
  process.exit(1)
}
const files = markdownFiles()
const blocks: Block[] = []
const problems: Problem[] = []
let links = 0
for (const file of files) {
  const lines = readFileSync(path.join(ROOT, file), 'utf8').split('\n')
  blocks.push(...tsBlocks(file, lines))
  const found = brokenLinks(file, lines)
  links += found.checked
  problems.push(...found.problems)
}
problems.push(...typeCheck(blocks, { 'stubs.d.ts': STUBS }))
for (const p of problems.sort((a, b) => a.file.localeCompare(b.file) || a.line - b.line)) console.error(`${p.file}:${p.line}: ${p.message}`)
console.log(`docs:check: ${files.length} files, ${blocks.length} ts blocks, ${links} relative links; ${problems.length} problem${problems.length === 1 ? '' : 's'}`)
process.exit(problems.length === 0 ? 0 : 1)
