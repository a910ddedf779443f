/**
 * npm run docs:examples: every `@example` of the package's API compiles. The examples are those in
 * the TSDoc comments of what src/index.ts exports, and of those exports' members (a class's
 * methods, an interface's properties): what the API reference (`npm run docs`) shows.
 *
 * Each example is type-checked as a module of its own, as docs:check checks the docs' blocks
 * (scripts/type-check-blocks.ts): strict, ES2022, top-level await allowed, `'skills-db'` being this
 * checkout's dist/index.d.ts, so run `npm run build` first. The rules for an example:
 *
 * - the code is the example's whole text, or the ```ts block in it if it has one; text on the
 *   `@example` line itself is a title, not code;
 * - what it uses from 'skills-db' it need not import: the checker adds one import line of the
 *   package's exports the example names and does not import itself. Anything else (node:crypto,
 *   kysely-ctl) it imports, as a reader would have to;
 * - what it assumes is in PREAMBLE below, one `declare const` a name; an example that needs
 *   another declares it itself, or PREAMBLE grows by one line.
 *
 * The examples are read with TypeScript's compiler API rather than from TypeDoc's JSON output: the
 * compiler gives each tag's exact line in its file, for the error, and reads the same exports the
 * build compiles, without a second TypeDoc run.
 *
 * Each problem prints as `src/<file>.ts:<line>: <what is wrong>`; the exit code is 1 when there is one.
 */
import { existsSync } from 'node:fs'
import path from 'node:path'
import ts from 'typescript'
import { DIST_TYPES, ROOT, STUBS, typeCheck, type Block } from './type-check-blocks.ts'

/** The names the examples take as given: a global script, so an example may still declare its own. */
const PREAMBLE = `
declare const db: import('kysely').Kysely<import('skills-db').DB>  // createDb(process.env.DATABASE_URL!)
declare const tenantId: string                                     // the tenant a request is for
declare const userId: string                                       // the signed-in user (users.id)
declare const skillId: string                                      // a skill of that tenant (skills.id)
declare const apiKey: string                                       // the API key a request presented
`

/** The package's exports, as the build compiles them: each name with the declarations it stands for. */
function packageExports(): { names: Set<string>; declarations: ts.Declaration[] } {
  const config = ts.getParsedCommandLineOfConfigFile(path.join(ROOT, 'tsconfig.build.json'), {}, { ...ts.sys, onUnRecoverableConfigFileDiagnostic: () => {} })
  if (!config) throw new Error('tsconfig.build.json could not be read')
  const program = ts.createProgram([path.join(ROOT, 'src/index.ts')], { ...config.options, noEmit: true })
  const checker = program.getTypeChecker()
  const index = program.getSourceFile(path.join(ROOT, 'src/index.ts'))!
  const exports = checker.getExportsOfModule(checker.getSymbolAtLocation(index)!)
  const declarations = exports.flatMap((s) => (s.flags & ts.SymbolFlags.Alias ? checker.getAliasedSymbol(s) : s).declarations ?? [])
  return { names: new Set(exports.map((s) => s.name)), declarations }
}

/** The @example tags on a declaration and anything inside it (members, overloads), each once. */
function examples(declaration: ts.Declaration, seen: Set<ts.Node>): Block[] {
  const found: Block[] = []
  const source = declaration.getSourceFile()
  const visit = (node: ts.Node) => {
    for (const tag of ts.getJSDocTags(node)) {
      if (tag.tagName.text !== 'example' || seen.has(tag)) continue
      seen.add(tag)
      found.push(exampleOf(source, tag))
    }
    ts.forEachChild(node, visit)
  }
  visit(declaration)
  return found
}

/** An example's code, and the line of its file where the code starts. */
function exampleOf(source: ts.SourceFile, tag: ts.JSDocTag): Block {
  const first = source.getLineAndCharacterOfPosition(tag.getStart(source)).line + 1
  // The tag's text runs to the next tag or the comment's end: its lines without their ` * `.
  const lines = source.text.slice(tag.getStart(source), tag.end).split('\n').slice(1)
    .map((l) => l.replace(/^\s*\*\/.*$/, '').replace(/^\s*\* ?/, ''))
  let start = 0
  let end = lines.length
  const fence = lines.findIndex((l) => /^\s*```/.test(l))
  if (fence !== -1) {
    start = fence + 1
    const close = lines.findIndex((l, i) => i > fence && /^\s*```\s*$/.test(l))
    end = close === -1 ? lines.length : close
  }
  while (end > start && lines[end - 1]!.trim() === '') end--
  return { file: path.relative(ROOT, source.fileName), line: first + 1 + start, code: lines.slice(start, end).join('\n') }
}

/** The package's exports an example names but does not import, as one import line (or none). */
function missingImports(code: string, exported: Set<string>): string | undefined {
  const source = ts.createSourceFile('example.ts', code, ts.ScriptTarget.ES2022, true)
  const imported = new Set<string>()
  const used = new Set<string>()
  const visit = (node: ts.Node) => {
    if (ts.isImportSpecifier(node) || ts.isImportClause(node) || ts.isNamespaceImport(node)) {
      if (node.name) imported.add(node.name.text)
    } else if (ts.isIdentifier(node) && exported.has(node.text)) {
      const parent = node.parent
      const isMemberName = (ts.isPropertyAccessExpression(parent) && parent.name === node) || (ts.isQualifiedName(parent) && parent.right === node)
      const isDeclaredName = (ts.isVariableDeclaration(parent) || ts.isFunctionDeclaration(parent) || ts.isParameter(parent) || ts.isBindingElement(parent) || ts.isPropertyAssignment(parent)) && parent.name === node
      if (!isMemberName && !isDeclaredName) used.add(node.text)
    }
    ts.forEachChild(node, visit)
  }
  visit(source)
  const names = [...used].filter((n) => !imported.has(n)).sort()
  return names.length > 0 ? `import { ${names.join(', ')} } from 'skills-db'` : undefined
}

if (!existsSync(DIST_TYPES)) {
  console.error('dist/index.d.ts is missing: run `npm run build` first (the examples are checked against the built package)')
  process.exit(1)
}
const { names, declarations } = packageExports()
const seen = new Set<ts.Node>()
const blocks = declarations.flatMap((d) => examples(d, seen)).map((block) => {
  const imports = missingImports(block.code, names)
  // The import goes on a line of its own before the code; the block starts a line earlier so that
  // an error in the example still points at its line in the file.
  return imports ? { ...block, line: block.line - 1, code: `${imports}\n${block.code}` } : block
})
const problems = typeCheck(blocks, { 'stubs.d.ts': STUBS, 'preamble.d.ts': PREAMBLE })
for (const p of problems.sort((a, b) => a.file.localeCompare(b.file) || a.line - b.line)) console.error(`${p.file}:${p.line}: ${p.message}`)
const files = new Set(blocks.map((b) => b.file)).size
console.log(`docs:examples: ${blocks.length} @example blocks in ${files} files, of ${names.size} exports; ${problems.length} problem${problems.length === 1 ? '' : 's'}`)
process.exit(problems.length === 0 ? 0 : 1)
