import type { Dialect } from 'kysely'
import type pg from 'pg'

/**
 * The pool and dialect of each Kysely instance createDb made for withTenant's pipelined way: it
 * checks its connection out of the pool itself, and builds fn's transaction with the dialect. Kept
 * apart from create-db.ts, whose declarations an app's compiler reads: an app need not have pg's
 * types (the installed-package test compiles one without them).
 */
const pools = new WeakMap<object, { pool: pg.Pool; dialect: Dialect }>()

export function pipelinedPool(db: object, pool: pg.Pool, dialect: Dialect): void {
  pools.set(db, { pool, dialect })
}

/** The pool and dialect of a Kysely instance made by createDb (unless `pipelinedWithTenant: false`). */
export function poolOf(db: object): { pool: pg.Pool; dialect: Dialect } | undefined {
  return pools.get(db)
}
