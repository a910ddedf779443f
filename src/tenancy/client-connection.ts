import type { CompiledQuery, DatabaseConnection, QueryResult } from 'kysely'
import type pg from 'pg'

/**
 * How fn's statements reach the connection withTenant holds (its first may go with the tenant's
 * entry). `sessionSafe`: the statement can leave nothing on the session (session-safe-statements.ts).
 */
export type RunStatement = (text: string, values: readonly unknown[], sessionSafe: boolean) => Promise<pg.QueryResult | pg.QueryResult[]>

/**
 * Kysely's view of the pg client withTenant checked out itself: fn's queries run on the connection
 * that sent BEGIN and `enter()`, without going through Kysely's connection provider (whose client
 * withTenant could only learn through an async context, which every promise of the process then
 * pays for on Node 20). Results as Kysely's own Postgres driver gives them.
 */
export class ClientConnection implements DatabaseConnection {
  constructor(private readonly run: RunStatement, private readonly sessionSafe: (compiled: CompiledQuery) => boolean) {}

  async executeQuery<R>(compiledQuery: CompiledQuery, options?: { signal?: AbortSignal }): Promise<QueryResult<R>> {
    if (options?.signal) throw new Error('withTenant: a query inside fn cannot be aborted by a signal (the transaction would be left in doubt); abort the request around withTenant instead')
    const result = await this.run(compiledQuery.sql, compiledQuery.parameters, this.sessionSafe(compiledQuery))
    const { command, rowCount, rows } = result as pg.QueryResult
    if (command === 'ROLLBACK' || command === 'COMMIT') return { rows: [{ command } as R] }
    return {
      ...(command === 'INSERT' || command === 'UPDATE' || command === 'DELETE' || command === 'MERGE' ? { numAffectedRows: BigInt(rowCount ?? 0) } : {}),
      rows: (rows ?? []) as R[],
    }
  }

  // eslint-disable-next-line require-yield
  async *streamQuery<R>(): AsyncIterableIterator<QueryResult<R>> {
    throw new Error('withTenant: streaming (stream()) is not available inside fn; select in pages instead')
  }
}
