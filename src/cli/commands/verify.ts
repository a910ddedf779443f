import { existsSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { typesDiff } from '../../codegen/generate-types.ts'
import { UsageError, type Command } from '../command.ts'
import { TARGET } from '../options.ts'
import { usingTarget } from '../target.ts'
import { configuredTypesFile, shown } from '../types-file.ts'

/** The types of the schema this version of skills-db migrates to: the source file, or its copy in dist/. */
const SOURCE_TYPES = fileURLToPath(new URL('../../db-types.ts', import.meta.url))
const SHIPPED_TYPES = fileURLToPath(new URL('../../db-types.txt', import.meta.url))
export const EXPECTED_TYPES = existsSync(SOURCE_TYPES) ? SOURCE_TYPES : SHIPPED_TYPES

export const verify: Command = {
  name: 'verify',
  summary: 'Compares the database\'s public schema, as Kysely types, with a types file, and prints the difference. Exit 1 when they differ. Changes nothing. Needs kysely-codegen installed.',
  options: {
    ...TARGET,
    types: { type: 'string', value: '<file>', help: 'the file to compare with (default: the types file configured for codegen, else the schema this version of skills-db migrates to)' },
  },
  run(values) {
    const file = typeof values.types === 'string' ? path.resolve(values.types) : configuredTypesFile(values) ?? EXPECTED_TYPES
    if (!existsSync(file)) throw new UsageError(`no types file at ${file}`)
    const expected = readFileSync(file, 'utf8')
    return usingTarget(values, async (_db, source) => {
      const diff = await typesDiff(source.url, expected)
      const name = shown(file)
      if (!diff) {
        console.log(`the database matches ${name}`)
        return 0
      }
      console.log(`the database differs from ${name} (+ the database has, - the file has):\n${diff}`)
      console.error(`error: the database's schema differs from ${name}`)
      return 1
    })
  },
}
