import { run } from './run-context.ts'

/**
 * A statement of ours waited on a worker, behind another session's lock, for longer than the lock
 * timeout, and was cancelled. It carries lock_not_available's code, so withLockRetry retries it
 * like a lock timeout on this node (src/citus/remote-waits.ts watches for it), and names `holders` when its budget runs out.
 */
export class RemoteLockWait extends Error {
  override name = 'RemoteLockWait'
  readonly code = '55P03'
  constructor(readonly holders: string) {
    super(`waited on a worker longer than the lock timeout, behind ${holders}`)
  }
}

/**
 * The RemoteLockWait a statement's error stands for: a cancellation (57014) the watcher made, whose
 * blocker it takes; else undefined. withLockRetry and the Citus commands' steps ask it.
 */
export function remoteLockWait(error: unknown): RemoteLockWait | undefined {
  const found = run().remoteWaits
  if (!found?.blocker || (error as { code?: string })?.code !== '57014') return undefined
  const holders = found.blocker
  found.blocker = undefined
  return new RemoteLockWait(holders)
}

