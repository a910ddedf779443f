#!/usr/bin/env node
import { runCli } from './main.ts'

// process.exit, not exitCode: a pool or server handle left behind by a failure must not keep the CLI alive.
process.exit(await runCli(process.argv.slice(2)))
