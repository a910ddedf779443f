import pg from 'pg'

/** A statement of a batch: one SQL statement and its bound parameters. */
export interface BatchStatement {
  text: string
  values?: readonly unknown[]
}

/** What the server answered one statement of a batch. */
export type BatchAnswer = { ok: true; result: pg.QueryResult } | { ok: false; error: Error }

/** A statement behind one that failed: the server skipped it (up to the Sync), so it did not run. */
export class NotRun extends Error {
  override name = 'NotRun'
}

/** pg exports what a batch needs (Result, utils.prepareValue) from 8.15 on; an older pg cannot send one. */
const exported = pg as unknown as { Result?: new (rowMode?: string, types?: unknown) => pg.Result; utils?: { prepareValue?: (value: unknown) => unknown } }
export const batchesSupported = typeof exported.Result === 'function' && typeof exported.utils?.prepareValue === 'function'

/**
 * Sends `statements` in one write, each as its own extended-protocol statement (parse, bind,
 * describe, execute: the values are bound parameters), with one Sync after the last. The server
 * runs them in order and answers them all in one flush: one round trip, where pg's own pipeline mode
 * puts a Sync after each statement, and the server flushes its answer to each (a send of the server's,
 * and a wake-up of this process's, per statement). If one fails, the server skips the rest up to the
 * Sync: they get {@link NotRun}. Inside a transaction block (a BEGIN among them or before) a failure
 * leaves the transaction aborted.
 *
 * Resolves once the server has answered them all; never rejects for a statement's error (each
 * answer says), only when the statements cannot be sent (a value pg cannot serialize: nothing is
 * sent then) or the connection fails. Uses pg's public Connection, Result and prepareValue; the
 * client must not be in pg's pipeline mode (which refuses a query object of its own).
 */
export function sendBatch(client: pg.ClientBase, statements: readonly BatchStatement[]): Promise<BatchAnswer[]> {
  return new Promise((resolve, reject) => {
    let mapped: unknown[][]
    try {
      mapped = statements.map((s) => (s.values ?? []).map((v) => exported.utils!.prepareValue!(v)))
    } catch (error) {
      reject(error)
      return
    }
    client.query(new Batch(statements, mapped, (client as { _types?: unknown })._types, resolve, reject) as unknown as pg.QueryConfig)
  })
}

/** The query object pg's client drives: it writes the batch, and the client hands it each message of the answer. */
class Batch {
  private readonly results: pg.Result[]
  private index = 0
  /** A type parser that threw on a row of the statement at that index: it ran, but its rows cannot be given (as with pg's own queries). */
  private readonly rowErrors: (Error | undefined)[] = []
  private settled = false
  /** The server's error, while the batch waits for the ReadyForQuery that follows it. */
  private failed: Error | undefined

  constructor(
    /** Public for whoever watches what a client sends (the tests count round trips). */
    readonly statements: readonly BatchStatement[],
    private readonly values: unknown[][],
    types: unknown,
    private readonly resolve: (answers: BatchAnswer[]) => void,
    private readonly reject: (error: Error) => void,
  ) {
    this.results = statements.map(() => new exported.Result!(undefined, types))
  }

  submit(connection: Connection): void {
    const stream = connection.stream
    stream?.cork?.()
    try {
      this.statements.forEach((s, i) => {
        connection.parse({ text: s.text, name: '', types: [] })
        connection.bind({ portal: '', statement: '', values: this.values[i]!, binary: false })
        connection.describe({ type: 'P', name: '' })
        connection.execute({ portal: '', rows: 0 })
      })
      connection.sync()
    } finally {
      stream?.uncork?.()
    }
  }

  handleRowDescription(msg: { fields: unknown[] }): void {
    ;(this.results[this.index] as unknown as { addFields(f: unknown[]): void }).addFields(msg.fields)
  }

  handleDataRow(msg: { fields: unknown[] }): void {
    const result = this.results[this.index] as unknown as { parseRow(f: unknown[]): unknown; addRow(r: unknown): void }
    try {
      result.addRow(result.parseRow(msg.fields))
    } catch (error) {
      this.rowErrors[this.index] ??= error as Error
    }
  }

  handleCommandComplete(msg: unknown): void {
    ;(this.results[this.index] as unknown as { addCommandComplete(m: unknown): void }).addCommandComplete(msg)
    this.index++
  }

  handleEmptyQuery(): void {
    this.index++
  }

  handlePortalSuspended(): void {}

  handleCopyInResponse(connection: Connection): void {
    connection.sendCopyFail('COPY FROM STDIN is not available here')
  }

  /** COPY … TO STDOUT: its rows come as copy data, which a batch does not give back; the statement fails rather than answer none. */
  handleCopyData(): void {
    this.rowErrors[this.index] ??= new Error('COPY … TO STDOUT is not available here: select the rows instead')
  }

  /**
   * The server's error for the statement it was running. pg hands this object no ReadyForQuery
   * after an error, but the batch settles only once it has come: until then the client's
   * transaction status is the one from before the batch (a caller that read it at once took an
   * aborted transaction for an ended one).
   */
  handleError(error: Error, connection: Connection): void {
    if (this.settled || this.failed) return
    if (!(error instanceof pg.DatabaseError)) {
      this.settle(error)
      return
    }
    this.failed = error
    const done = () => {
      connection.off('readyForQuery', done)
      connection.off('end', done)
      this.settle(error)
    }
    connection.once('readyForQuery', done)
    connection.once('end', done)
  }

  handleReadyForQuery(): void {
    this.settle(undefined)
  }

  private settle(error: Error | undefined): void {
    if (this.settled) return
    this.settled = true
    // Not the server's answer to a statement: the connection broke, and nothing can be said of any of them.
    if (error && !(error instanceof pg.DatabaseError)) {
      this.reject(error)
      return
    }
    this.resolve(this.statements.map((_, i): BatchAnswer => {
      if (i < this.index) return this.rowErrors[i] ? { ok: false, error: this.rowErrors[i]! } : { ok: true, result: this.results[i]! }
      if (i === this.index && error) return { ok: false, error }
      return { ok: false, error: new NotRun('not run: a statement before it in the same batch failed') }
    }))
  }
}

/** The part of pg's Connection a batch writes with. */
interface Connection {
  stream?: { cork?: () => void; uncork?: () => void }
  parse(q: { text: string; name: string; types: unknown[] }): void
  bind(b: { portal: string; statement: string; values: unknown[]; binary: boolean }): void
  describe(d: { type: 'P' | 'S'; name: string }): void
  execute(e: { portal: string; rows: number }): void
  sync(): void
  sendCopyFail(message: string): void
  once(event: 'readyForQuery' | 'end', listener: () => void): void
  off(event: 'readyForQuery' | 'end', listener: () => void): void
}
