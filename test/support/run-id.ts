/**
 * Names of everything a test run creates on a (possibly shared) server start with
 * `skills_<pid>_<tag>_`: cluster-wide roles and databases never collide between runs, and a
 * later run can tell — by the pid — which leftovers belong to a run that died, and remove them.
 */
export function newRunId(): string {
  return `skills_${process.pid}_${Math.random().toString(36).slice(2, 6)}`
}

export function ownerPidOf(name: string): number | undefined {
  const m = /^skills_(\d+)_[a-z0-9]{1,4}(_|$)/.exec(name)
  return m ? Number(m[1]) : undefined
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}
