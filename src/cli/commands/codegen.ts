import { writeTypes } from '../../codegen/generate-types.ts'
import type { Command } from '../command.ts'
import { UsageError } from '../command.ts'
import { TARGET } from '../options.ts'
import { usingTarget } from '../target.ts'
import { configuredTypesFile, notAtLatest, shown } from '../types-file.ts'

export const codegen: Command = {
  name: 'codegen',
  summary: 'Writes the Kysely types of the database\'s public schema (kysely-codegen) to the types file. Needs kysely-codegen installed.',
  options: { ...TARGET, 'types-out': { type: 'string', value: '<file>', help: 'where (default: "skills-db": { "typesOut" } in package.json)' } },
  async run(values) {
    const file = configuredTypesFile(values)
    if (!file) throw new UsageError('codegen needs a file to write: pass --types-out <file>, or set "skills-db": { "typesOut": "<file>" } in package.json')
    return usingTarget(values, async (db, source) => {
      // Types of an empty or older schema would overwrite the file with tables the app lacks.
      const why = await notAtLatest(db)
      if (why) throw new UsageError(`the database is not at the latest migration (${why}): run skills-db latest first (npm run migrate:latest), then codegen; ${shown(file)} is left as it was`)
      const wrote = await writeTypes(source.url, file)
      console.log(`${wrote ? 'wrote' : 'unchanged:'} ${shown(file)}`)
      return 0
    })
  },
}
