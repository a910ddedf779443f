import { makeMigration } from '../../migrator/make-migration.ts'
import type { Command } from '../command.ts'

export const make: Command = {
  name: 'make',
  summary: 'Creates src/migrations/NNNN_<name>.ts after the newest migration, in a checkout of skills-db (an app does not add migrations to skills-db).',
  positionals: [{ name: '<name>', required: true, help: 'lower-case words joined by _, e.g. add_skill_tags' }],
  options: {},
  async run(_values, [name]) {
    console.log(`created ${makeMigration(name!)}`)
    return 0
  },
}
