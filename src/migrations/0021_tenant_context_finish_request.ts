import { sql, type Kysely } from 'kysely'
import { databaseFunction } from '../online/database-function.ts'
import { applySteps, revertSteps, type Step } from '../online/step.ts'

/**
 * The end of a withTenant request, cheaper (issue 18): `finish_request()`, which withTenant calls
 * where it exists instead of 0019's `end_request(true)`. No table changes: a tenant export taken
 * before it imports after it, and back (src/tenant-admin/migrations-without-table-changes.ts).
 */

// Frozen: the function bodies below are this migration's own, as of when it was written (see
// README.md in this folder).

/**
 * The end of a request before its COMMIT, for what 0019's `end_request(true)` does in about 35 µs
 * of the server's: refuses (SQLSTATE TC002) when the transaction is no longer the one entered, then
 * cleans the session up. 0019's reads `current_tenant()` through an EXECUTE of its own inside an
 * exception block (a subtransaction), then calls `clean_up()`; this one, a SECURITY DEFINER
 * function, compares the mark with the setting's tenant itself (what `current_tenant()` does), then
 * calls 0019's `clean_up()` (as the owner: the commands act on the session whoever runs them):
 * about 20 µs less. It declares no variable: a SECURITY DEFINER function without a SET clause must name
 * no type through the caller's search_path (a role with TEMPORARY could put a domain of that name
 * in pg_temp, searched first for types, whose CHECK would run as the owner: an outside review, on a
 * draft that declared `record`). A session whose mark SQL discarded (DISCARD
 * SEQUENCES) gets currval's error (55000), which withTenant reports as TC002's. No SET clause (it
 * would put the caller's search_path back after clean_up()'s RESET ALL): every name and operator is qualified.
 */
const finishRequest = databaseFunction({
  signature: 'tenant_context.finish_request()',
  executeBy: 'app role',
  definition: sql`
    create or replace function tenant_context.finish_request() returns void
    language plpgsql volatile security definer
    as $body$
    begin
      if not coalesce(pg_catalog.current_setting('tenant_context.entered', true) operator(pg_catalog.=) 'on'
           and pg_catalog.currval('tenant_context.session_tenant'::pg_catalog.regclass) operator(pg_catalog.=)
             pg_catalog.hashtextextended(pg_catalog.current_setting('app.current_tenant_id', true),
               (pg_catalog.date_part('epoch', pg_catalog.now()) operator(pg_catalog.*) 1000000)::pg_catalog.int8), false) then
        raise exception 'the transaction withTenant entered was ended by SQL in fn' using errcode = 'TC002';
      end if;
      perform tenant_context.clean_up();
    end $body$`,
})

const steps: Step[] = [finishRequest]

export const up = (db: Kysely<any>) => applySteps(db, steps)
export const down = (db: Kysely<any>) => revertSteps(db, steps)
