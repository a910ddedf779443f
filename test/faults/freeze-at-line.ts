/**
 * A test instrument the kill trials load into the CLI's process (node --import): right after the
 * process prints a line matching SKILLS_DB_TEST_FREEZE_AT, it stops itself (SIGSTOP), so the trial
 * kills it exactly there. Printing to a pipe is synchronous on Linux, so the line has reached the
 * test and nothing after it has reached the server: without this, the process runs on for the
 * millisecond or so the test takes to read the line, past short steps.
 */
const pattern = process.env.SKILLS_DB_TEST_FREEZE_AT
if (pattern) {
  const marker = new RegExp(pattern)
  const write = process.stdout.write.bind(process.stdout) as (chunk: unknown, ...rest: unknown[]) => boolean
  let frozen = false
  process.stdout.write = ((chunk: unknown, ...rest: unknown[]) => {
    const written = write(chunk, ...rest)
    if (!frozen && marker.test(String(chunk))) {
      frozen = true
      process.kill(process.pid, 'SIGSTOP')
    }
    return written
  }) as typeof process.stdout.write
}
