import { DefaultQueryExecutor, type CompiledQuery, type DatabaseConnection, type Dialect, type KyselyPlugin, type OperationNode, type QueryId, type RootOperationNode } from 'kysely'

/**
 * Statements that can leave nothing on the session and cannot end their transaction: a request of
 * withTenant's whose statements are all of this kind ends with COMMIT alone, without the check that
 * fn left the transaction entered and without the clean-up (issue 18: about 35 µs of the server's a
 * request). Anything else keeps both.
 *
 * A statement is one when Kysely's query builder compiled it, in fn's transaction, from a select,
 * insert, update or delete made only of the node kinds below. The verdict is kept with the
 * CompiledQuery object the transaction's own executor made (Kysely freezes it, so its text is the
 * text compiled from that query): a CompiledQuery made anywhere else, or copied, is not one. An
 * outside review beat the first version of this (8f72ed9), which looked for what could do harm
 * (a deny-list) and read the query while the server runs the text; this one lets through only
 * what it knows, and the verdict is tied to the text:
 * - no SQL written by hand (`sql`, `CompiledQuery.raw`): RawNode only as the builder's own
 *   `asc`/`desc`;
 * - no text the compiler writes out as given: an explain's format, a cast's type, a function's
 *   name; an operator only from the list below, an aggregate only `count`, `sum`, `avg`, `min`,
 *   `max`, an immediate value only a number, a boolean or null;
 * - names are quoted by the compiler. What a quoted name could still call, a function through
 *   attribute notation (`t.f` is `f(t)`), an operator's function, an aggregate of those names:
 *   test/session-safe-statements.test.ts checks that the app role can call none that is volatile
 *   or not PostgreSQL's own.
 *
 * Values are bound parameters, whatever they hold. What is not in scope: fn's own JavaScript made
 * up to deceive this (it runs with the app's key in hand, and could sign for any tenant).
 */
export function isSessionSafe(compiled: CompiledQuery): boolean {
  return safe.has(compiled)
}

const safe = new WeakSet<CompiledQuery>()

/** Whether a query the builder made is made only of what {@link isSessionSafe} lets through. */
export function madeOfSafeNodes(node: RootOperationNode): boolean {
  return ROOTS.has(node.kind) && safeNode(node)
}

const ROOTS = new Set(['SelectQueryNode', 'InsertQueryNode', 'UpdateQueryNode', 'DeleteQueryNode'])

const yes = () => true
const AGGREGATES = new Set(['count', 'sum', 'avg', 'min', 'max'])
const OPERATORS = new Set([
  '=', '!=', '<>', '<', '<=', '>', '>=', 'in', 'not in', 'is', 'is not', 'is distinct from', 'is not distinct from',
  'like', 'not like', 'ilike', 'not ilike', '~', '~*', '!~', '!~*',
  '+', '-', '*', '/', '%', '||', '@>', '<@', '&&', '?', '?|', '?&', '->', '->>',
  'exists', 'not exists', 'not',
])
const JOINS = new Set(['InnerJoin', 'LeftJoin', 'RightJoin', 'FullJoin', 'CrossJoin', 'LateralInnerJoin', 'LateralLeftJoin', 'LateralCrossJoin'])
const MODIFIERS = new Set(['ForKeyShare', 'ForNoKeyUpdate', 'ForUpdate', 'ForShare', 'NoWait', 'SkipLocked', 'Distinct'])

type Fields = Record<string, unknown>
/**
 * The node kinds a safe statement may hold, each with what its fields that the compiler writes
 * out as given must be. A kind not here makes the statement unsafe.
 */
const KINDS: Record<string, (node: Fields) => boolean> = {
  SelectQueryNode: yes, InsertQueryNode: (n) => !n.replace && !n.ignore, UpdateQueryNode: yes, DeleteQueryNode: yes,
  FromNode: yes, SelectionNode: yes, SelectAllNode: yes, WhereNode: yes, HavingNode: yes, ReturningNode: yes,
  ValuesNode: yes, ValueListNode: yes, TupleNode: yes, DefaultInsertValueNode: yes, ColumnUpdateNode: yes,
  OnConflictNode: yes, UsingNode: yes, LimitNode: yes, OffsetNode: yes, ListNode: yes,
  WithNode: yes, CommonTableExpressionNode: yes, CommonTableExpressionNameNode: yes,
  AliasNode: yes, ReferenceNode: yes, ColumnNode: yes, IdentifierNode: yes, TableNode: yes, SchemableIdentifierNode: yes,
  AndNode: yes, OrNode: yes, ParensNode: yes, BinaryOperationNode: yes, UnaryOperationNode: yes, CaseNode: yes, WhenNode: yes,
  OrderByNode: yes, GroupByNode: yes, GroupByItemNode: yes, OverNode: yes, PartitionByNode: yes, PartitionByItemNode: yes,
  OnNode: yes,
  JoinNode: (n) => JOINS.has(n.joinType as string),
  OrderByItemNode: (n) => n.nulls === undefined || n.nulls === 'first' || n.nulls === 'last',
  OperatorNode: (n) => OPERATORS.has(n.operator as string),
  SetOperationNode: (n) => n.operator === 'union' || n.operator === 'intersect' || n.operator === 'except',
  SelectModifierNode: (n) => n.rawModifier === undefined && MODIFIERS.has(n.modifier as string),
  AggregateFunctionNode: (n) => AGGREGATES.has(n.func as string),
  // The builder's own order direction (`orderBy('x', 'desc')`), and nothing else written by hand.
  RawNode: (n) => (n.parameters as unknown[]).length === 0 && (n.sqlFragments as string[]).length === 1 && ((n.sqlFragments as string[])[0] === 'asc' || (n.sqlFragments as string[])[0] === 'desc'),
  // A value is a bound parameter; an immediate one is written into the text.
  ValueNode: (n) => !n.immediate || n.value === null || typeof n.value === 'number' || typeof n.value === 'boolean' || typeof n.value === 'bigint',
  PrimitiveValueListNode: yes,
}
/** Kinds whose fields are values (bound parameters), not nodes: not looked into. */
const VALUES = new Set(['ValueNode', 'PrimitiveValueListNode'])

function safeNode(node: OperationNode): boolean {
  const fields = node as unknown as Fields
  const allowed = Object.hasOwn(KINDS, node.kind) ? KINDS[node.kind] : undefined
  if (!allowed || !Object.isFrozen(node) || !allowed(fields)) return false
  if (VALUES.has(node.kind)) return true
  for (const key in fields) {
    const field = fields[key]
    if (Array.isArray(field)) {
      for (const child of field) if (!safeChild(child)) return false
    } else if (!safeChild(field)) {
      return false
    }
  }
  return true
}

/** A field of a node: another node, or a plain value (a name, a flag) the compiler does not write out as given. */
function safeChild(value: unknown): boolean {
  if (typeof value !== 'object' || value === null) return true
  return typeof (value as { kind?: unknown }).kind === 'string' && safeNode(value as OperationNode)
}

/**
 * The executor of fn's transaction: Kysely's own, which also records the queries it compiled
 * that are session-safe (and stays so through withPlugin and the like).
 */
export class SessionSafeExecutor extends DefaultQueryExecutor {
  constructor(private readonly parts: ExecutorParts, plugins: readonly KyselyPlugin[]) {
    super(parts.compiler, parts.adapter, parts.provider, [...plugins])
  }

  static of(dialect: Dialect, provider: ExecutorParts['provider'], plugins: readonly KyselyPlugin[]): SessionSafeExecutor {
    let made = compilers.get(dialect)
    if (!made) compilers.set(dialect, made = { compiler: dialect.createQueryCompiler(), adapter: dialect.createAdapter() })
    return new SessionSafeExecutor({ ...made, provider }, plugins)
  }

  override compileQuery<R = unknown>(node: RootOperationNode, queryId: QueryId): CompiledQuery<R> {
    const compiled = super.compileQuery(node, queryId) as CompiledQuery<R>
    // The same synchronous call: nothing can change the query between its compiling and this look.
    if (Object.isFrozen(compiled) && madeOfSafeNodes(node)) safe.add(compiled)
    return compiled
  }

  override withPlugins(plugins: readonly KyselyPlugin[]): SessionSafeExecutor {
    return new SessionSafeExecutor(this.parts, [...this.plugins, ...plugins])
  }

  override withPlugin(plugin: KyselyPlugin): SessionSafeExecutor {
    return new SessionSafeExecutor(this.parts, [...this.plugins, plugin])
  }

  override withPluginAtFront(plugin: KyselyPlugin): SessionSafeExecutor {
    return new SessionSafeExecutor(this.parts, [plugin, ...this.plugins])
  }

  override withConnectionProvider(provider: ExecutorParts['provider']): SessionSafeExecutor {
    return new SessionSafeExecutor({ ...this.parts, provider }, this.plugins)
  }

  override withoutPlugins(): SessionSafeExecutor {
    return new SessionSafeExecutor(this.parts, [])
  }
}

interface ExecutorParts {
  compiler: ReturnType<Dialect['createQueryCompiler']>
  adapter: ReturnType<Dialect['createAdapter']>
  provider: { provideConnection<T>(consumer: (connection: DatabaseConnection) => Promise<T>): Promise<T> }
}
/** One compiler per dialect: compiling is synchronous, so fn's transactions can share it. */
const compilers = new WeakMap<Dialect, Pick<ExecutorParts, 'compiler' | 'adapter'>>()

/**
 * Functions the app role may call that a session-safe statement could reach by name, and that
 * could change the session: any of them, and no request ends with COMMIT alone (askSession reads
 * it once per connection; test/session-safe-statements.test.ts holds the migrations to none).
 * Reached: through attribute notation (`"t"."f"` is `f(t)` when t has no column f: any function
 * callable with one argument a row can be), as an aggregate of the names let through (outside
 * pg_catalog, that name could resolve to a function of any schema on the search path), as an
 * operator's function, or as an implicit cast. Could change the session: volatile, or written in
 * SQL or a procedural language outside PostgreSQL's own schemas (a STABLE function of those may
 * still call a volatile one). PostgreSQL's own volatile functions of one row are none.
 */
export const SESSION_CHANGING_REACHABLE = `
  select p.oid::pg_catalog.regprocedure::pg_catalog.text as f from pg_catalog.pg_proc p
   where pg_catalog.has_function_privilege(p.oid, 'execute')
     and ((p.proname operator(pg_catalog.=) any ('{count,sum,avg,min,max}'::pg_catalog.name[])
           and p.pronamespace operator(pg_catalog.<>) 'pg_catalog'::pg_catalog.regnamespace)
       or ((p.provolatile operator(pg_catalog.=) 'v'
            or (p.pronamespace operator(pg_catalog.<>) all (array['pg_catalog'::pg_catalog.regnamespace, 'information_schema'::pg_catalog.regnamespace])
                and p.prolang operator(pg_catalog.<>) all (array[12, 13]::pg_catalog.oid[])))
         and ((p.pronargs operator(pg_catalog.>=) 1
               and p.pronargs operator(pg_catalog.-) p.pronargdefaults operator(pg_catalog.<=) case when p.provariadic operator(pg_catalog.<>) 0 then 2 else 1 end
               and exists (select from pg_catalog.pg_type t where t.oid operator(pg_catalog.=) p.proargtypes[0]
                 and (t.typname operator(pg_catalog.=) any ('{record,anyelement,anynonarray,anycompatible,anycompatiblenonarray,any}'::pg_catalog.name[])
                   or t.typtype operator(pg_catalog.=) 'c'
                   or (t.typtype operator(pg_catalog.=) 'd' and exists (select from pg_catalog.pg_type b where b.oid operator(pg_catalog.=) t.typbasetype and b.typtype operator(pg_catalog.=) 'c')))))
           or p.oid operator(pg_catalog.=) any (array(select o.oprcode::pg_catalog.oid from pg_catalog.pg_operator o))
           or p.oid operator(pg_catalog.=) any (array(select c.castfunc from pg_catalog.pg_cast c where c.castcontext operator(pg_catalog.=) any ('{i,a}'::"char"[]))))))`
