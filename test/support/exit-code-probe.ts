/**
 * Run as a child process by test/embedded-exit-code.test.ts: starts and stops an embedded
 * PostgreSQL (the fresh-machine path of npm test and of the CLI) in a process that has set its
 * exit code, then ends without calling process.exit. It must exit with that code.
 */
import { startTestServer } from '../../fixtures/test-server.ts'

process.exitCode = 3
const server = await startTestServer()
await server.stop()
console.log(`stopped ${server.source}`)
