/**
 * Migrations that change no table a tenant export holds, nor anything an import does (function
 * bodies only): an export taken on one side of them imports on the other. Import otherwise asks for
 * exactly the migrations the export names, since the rows' shape follows them; without this list,
 * every such migration made every existing export un-importable. Each one listed is checked by
 * test/export-across-migrations.test.ts (an export from before it imports after it, and back).
 */
export const TABLES_UNCHANGED: ReadonlySet<string> = new Set([
  '0021_tenant_context_finish_request',
])
