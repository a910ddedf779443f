import { parseArgs } from 'node:util'

/** One option of a command: how node:util's parseArgs reads it, and how --help describes it. */
export interface OptionSpec {
  type: 'string' | 'boolean'
  multiple?: boolean
  short?: string
  /** e.g. `<name>`: shown after the flag in --help */
  value?: string
  help: string
}

export type OptionValues = Record<string, string | boolean | string[] | undefined>

/**
 * A command of the skills-db CLI: a declaration (what --help prints, what parseArgs accepts) and
 * `run`, which calls the library and returns the exit code. Errors it throws become one line.
 */
export interface Command {
  name: string
  summary: string
  /** the arguments after the command name, for the usage line, e.g. `<name>` */
  positionals?: { name: string; required: boolean; help: string }[]
  options: Record<string, OptionSpec>
  run(values: OptionValues, positionals: string[]): Promise<number>
}

/** A mistake in how the command was called: reported with a pointer to --help. */
export class UsageError extends Error {
  override name = 'UsageError'
}

/** Parses `argv` for `command`: strict (an unknown option is an error naming it), `--no-<flag>` for booleans. */
export function parseCommandLine(command: Command, argv: string[]): { values: OptionValues; positionals: string[] } {
  let parsed
  try {
    parsed = parseArgs({ args: argv, options: command.options, allowPositionals: true, allowNegative: true, strict: true })
  } catch (error) {
    const code = (error as { code?: string }).code
    const message = (error as Error).message
    const flag = /'(-[^' ]+)/.exec(message)?.[1]
    if (code === 'ERR_PARSE_ARGS_UNKNOWN_OPTION') throw new UsageError(`unknown option ${flag} for skills-db ${command.name}`)
    if (code === 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE') {
      // Node says the same for a flag given a value (--force=yes) and for an option missing one.
      const name = flag?.replace(/^--?/, '').replace(/=.*$/, '')
      const spec = name ? command.options[name] : undefined
      if (spec?.type === 'boolean') throw new UsageError(`option --${name} takes no value (give --${name} alone, or --no-${name})`)
      throw new UsageError(`option ${flag} needs a value`)
    }
    throw new UsageError(message.split('.')[0]!)
  }
  const specs = command.positionals ?? []
  const required = specs.filter((p) => p.required).length
  if (parsed.positionals.length < required) throw new UsageError(`skills-db ${command.name} needs ${specs.filter((p) => p.required).map((p) => p.name).join(' ')}`)
  if (parsed.positionals.length > specs.length) throw new UsageError(`unexpected argument "${parsed.positionals[specs.length]}" for skills-db ${command.name}`)
  return { values: parsed.values as OptionValues, positionals: parsed.positionals }
}

/** What `skills-db <command> --help` prints. */
export function commandHelp(command: Command): string {
  const positionals = (command.positionals ?? []).map((p) => (p.required ? ` ${p.name}` : ` [${p.name}]`)).join('')
  const lines = [`skills-db ${command.name}${positionals}${Object.keys(command.options).length ? ' [options]' : ''}`, '', `  ${command.summary}`]
  for (const p of command.positionals ?? []) lines.push('', `  ${p.name.padEnd(28)} ${p.help}`)
  if (Object.keys(command.options).length) lines.push('', 'Options:')
  for (const [name, spec] of Object.entries(command.options)) {
    const flag = `${spec.short ? `-${spec.short}, ` : ''}--${name}${spec.value ? ` ${spec.value}` : ''}`
    lines.push(`  ${flag.padEnd(28)} ${spec.help}${spec.multiple ? ' (repeatable)' : ''}`)
  }
  return lines.join('\n')
}
