import { DefaultQueryExecutor, type CompiledQuery, type DatabaseConnection, type Dialect, type KyselyPlugin, type OperationNode, type QueryId, type RootOperationNode } from 'kysely'

/**
 * Statements that can leave nothing on the session and cannot end their transaction: a request of
 * withTenant's whose statements are all of this kind ends with COMMIT alone, without the check that
 * fn left the transaction entered and without the clean-up (issue 18: about 35 µs of the server's a
 * request). Anything else keeps both.
 *
 * A statement is one when Kysely's query builder compiled it, in fn's transaction and during the
 * request, from a select, insert, update or delete made only of the node kinds below, and its text
 * passes {@link onlyQuotedNames}. The verdict is kept, per request, with the CompiledQuery object
 * the transaction's own executor made (Kysely freezes it, so its text is the text compiled from
 * that query): a CompiledQuery made anywhere else, earlier, or copied, is not one. Two outside
 * reviews shaped it (docs/design/tenant-context.md, "fifth step"):
 * - no SQL written by hand (`sql`, `CompiledQuery.raw`): RawNode only when it is exactly `asc` or
 *   `desc` (the builder's own order direction);
 * - no text the compiler writes out as given: an explain's format, a cast's type, a function's
 *   name; an operator only from the list below, an aggregate only `count`, `sum`, `avg`, `min`,
 *   `max`, an immediate value only a finite number, a bigint, a boolean or null;
 * - the compiled text has no comment, semicolon, string literal or dollar quote outside its quoted
 *   names: Kysely writes a unary minus before a negative number as `--1`, a comment that a newline
 *   in a later quoted name ends, letting the rest of that name run as SQL (review 2);
 * - a qualified name (`"t"."c"`) only where `t` names a table or view of the session's
 *   {@link KnownRelations} that has a column `c`, and no alias or CTE of the statement has that name:
 *   anything else may be attribute notation, `c(t)`, a call of any function of one row (review 1);
 * - writes only to a plain table the session knows, named without its schema (no view, no rule
 *   run by a write: `pg_settings` is a view the app role may update, whose rule runs
 *   `set_config(…, false)`; review 2, and review 4 through a view over it).
 *
 * Values are bound parameters, whatever they hold. What is not in scope: fn's own JavaScript made
 * up to deceive this (it runs with the app's key in hand, and could sign for any tenant).
 */
export function isSessionSafe(trx: { getExecutor(): unknown }, compiled: CompiledQuery): boolean {
  const executor = trx.getExecutor()
  return executor instanceof SessionSafeExecutor && executor.safe.has(compiled)
}

/**
 * What a session knows of the relations (outside PostgreSQL's own schemas) the app role may use, by
 * name; for a name held by several relations, what they all have. Read when a session is asked
 * ({@link KNOWN_RELATIONS}, again once a minute): a column added since is not known, and a
 * qualified name of it makes its statement not safe.
 * - `columns`: each relation's columns;
 * - `plainTables`: the tables a write may name and stay session-safe: ordinary or partitioned
 *   tables with no rule run by a write (a view's write, or a rule's, runs what its owner wrote:
 *   review 4 wrote `pg_settings` through a view over it, and set_config through a rule of a table
 *   the app role could update only some columns of).
 */
export interface KnownRelations {
  columns: ReadonlyMap<string, ReadonlySet<string>>
  plainTables: ReadonlySet<string>
}

/** {@link KnownRelations} as one JSON value: `[[relation, [column, …], plain], …]` (per relation, merged by {@link knownRelations}). */
export const KNOWN_RELATIONS = `
  select coalesce(pg_catalog.json_agg(pg_catalog.json_build_array(c.relname,
           (select coalesce(pg_catalog.array_agg(a.attname), '{}') from pg_catalog.pg_attribute a
             where a.attrelid operator(pg_catalog.=) c.oid and a.attnum operator(pg_catalog.>) 0 and not a.attisdropped),
           c.relkind operator(pg_catalog.=) any ('{r,p}'::"char"[])
             and not exists (select from pg_catalog.pg_rewrite r where r.ev_class operator(pg_catalog.=) c.oid and r.ev_type operator(pg_catalog.<>) '1'))), '[]')
    from pg_catalog.pg_class c
   where c.relkind operator(pg_catalog.=) any ('{r,v,m,p,f}'::"char"[])
     and c.relnamespace operator(pg_catalog.<>) all (array['pg_catalog'::pg_catalog.regnamespace, 'information_schema'::pg_catalog.regnamespace])
     and pg_catalog.has_any_column_privilege(c.oid, 'select,insert,update,references')`

/** {@link KNOWN_RELATIONS}'s answer: a relation name held twice keeps the columns both have, and is a plain table only if both are. */
export function knownRelations(rows: [string, string[], boolean][]): KnownRelations {
  const columns = new Map<string, Set<string>>()
  const plain = new Map<string, boolean>()
  for (const [relation, names, isPlain] of rows) {
    const had = columns.get(relation)
    columns.set(relation, had ? new Set(names.filter((c) => had.has(c))) : new Set(names))
    plain.set(relation, (plain.get(relation) ?? true) && isPlain)
  }
  return { columns, plainTables: new Set([...plain].filter(([, p]) => p).map(([name]) => name)) }
}

/** Whether a query the builder made is made only of what {@link isSessionSafe} lets through. */
export function madeOfSafeNodes(node: RootOperationNode, relations: KnownRelations): boolean {
  if (!ROOTS.has(node.kind)) return false
  const found: Found = { names: new Set(), qualified: [], targets: [] }
  return safeNode(node, found, false) && found.qualified.every((ref) => knownColumn(ref, found.names, relations.columns)) &&
    found.targets.every((target) => writable(target, relations.plainTables))
}

/** What a statement's walk collects: the names it gives (aliases, CTEs), and its qualified references. */
interface Found {
  names: Set<string>
  qualified: Fields[]
  /** What its inserts, updates and deletes write to. */
  targets: unknown[]
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
  SelectQueryNode: yes, UpdateQueryNode: yes, InsertQueryNode: (n) => !n.replace && !n.ignore, DeleteQueryNode: yes,
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
  // Exactly `asc` or `desc` (the builder's own order direction), and nothing else written by hand.
  RawNode: (n) => (n.parameters as unknown[]).length === 0 && (n.sqlFragments as string[]).length === 1 && ((n.sqlFragments as string[])[0] === 'asc' || (n.sqlFragments as string[])[0] === 'desc'),
  // A value is a bound parameter; an immediate one is written into the text (NaN and Infinity as
  // names PostgreSQL reads as columns or whole rows: review 4).
  ValueNode: (n) => !n.immediate || n.value === null || Number.isFinite(n.value) || typeof n.value === 'boolean' || typeof n.value === 'bigint',
  PrimitiveValueListNode: yes,
}
/** Kinds whose fields are values (bound parameters), not nodes: not looked into. */
const VALUES = new Set(['ValueNode', 'PrimitiveValueListNode'])

/**
 * Where a TableNode may stand: a relation of FROM, JOIN, USING or a write, a CTE's name, or a
 * qualified reference's table (checked by {@link knownColumn}). Anywhere else it is an expression,
 * and `"s"."f"` there is `f(s)` (review 3: `eb.table('skills.late')`).
 */
const TABLE_FIELDS: Record<string, string> = {
  FromNode: 'froms', JoinNode: 'table', UsingNode: 'tables', UpdateQueryNode: 'table', InsertQueryNode: 'into',
  CommonTableExpressionNameNode: 'table', ReferenceNode: 'table',
}

function safeNode(node: OperationNode, found: Found, tablePosition: boolean): boolean {
  const fields = node as unknown as Fields
  const allowed = Object.hasOwn(KINDS, node.kind) ? KINDS[node.kind] : undefined
  if (!allowed || !Object.isFrozen(node) || !allowed(fields)) return false
  if (node.kind === 'TableNode' && !tablePosition) return false
  // A relation named with its schema may be one the session does not know under that name (an app
  // table `attributes` beside information_schema.attributes): no qualified name may refer to it.
  if (node.kind === 'TableNode' && tableName(node)?.schema !== undefined) found.names.add(tableName(node)!.name)
  if (VALUES.has(node.kind)) return true
  if (node.kind === 'AliasNode') found.names.add(identifierName(fields.alias) ?? '')
  if (node.kind === 'CommonTableExpressionNameNode') found.names.add(tableName(fields.table)?.name ?? '')
  if (node.kind === 'ReferenceNode' && fields.table !== undefined) found.qualified.push(fields)
  if (node.kind === 'UpdateQueryNode') found.targets.push(fields.table)
  if (node.kind === 'InsertQueryNode') found.targets.push(fields.into)
  if (node.kind === 'DeleteQueryNode') found.targets.push(...(((fields.from as Fields | undefined)?.froms as unknown[] | undefined) ?? [undefined]))
  const tableField = Object.hasOwn(TABLE_FIELDS, node.kind) ? TABLE_FIELDS[node.kind] : undefined
  for (const key in fields) {
    const field = fields[key]
    // An alias of a relation (`skills as s`) is where the relation is; an alias of an expression is not.
    const tables = key === tableField || (node.kind === 'AliasNode' && key === 'node' && tablePosition)
    if (Array.isArray(field)) {
      for (const child of field) if (!safeChild(child, found, tables)) return false
    } else if (!safeChild(field, found, tables)) {
      return false
    }
  }
  return true
}

/** A field of a node: another node, or a plain value (a name, a flag) the compiler does not write out as given. */
function safeChild(value: unknown, found: Found, tablePosition: boolean): boolean {
  if (typeof value !== 'object' || value === null) return true
  return typeof (value as { kind?: unknown }).kind === 'string' && safeNode(value as OperationNode, found, tablePosition)
}

/** `"t"."c"` (or `"t".*`) where t is a relation the session knows with a column c, and no name the statement gives (and no schema). */
function knownColumn(ref: Fields, names: ReadonlySet<string>, columns: KnownRelations['columns']): boolean {
  const qualifier = tableName(ref.table)
  // Three parts (`"a"."b"."c"`) may also read as a column's field, or a function of a column: not safe.
  if (qualifier === undefined || qualifier.schema !== undefined || names.has(qualifier.name)) return false
  const table = qualifier.name
  const column = ref.column as Fields
  if (column.kind === 'SelectAllNode') return columns.has(table)
  return column.kind === 'ColumnNode' && (columns.get(table)?.has(identifierName(column.column) ?? '') ?? false)
}

/**
 * What a write (insert, update, delete) may name: a plain table the session knows (no view, no rule
 * run by a write), by its name alone (and none of PostgreSQL's own: pg_settings has a rule that sets).
 */
function writable(target: unknown, plainTables: ReadonlySet<string>): boolean {
  const node = (target as Fields | undefined)?.kind === 'AliasNode' ? (target as Fields).node : target
  const name = tableName(node)
  return name !== undefined && name.schema === undefined && !name.name.startsWith('pg_') && plainTables.has(name.name)
}

/** A TableNode's name and schema, if it is one. */
function tableName(node: unknown): { name: string; schema?: string } | undefined {
  const table = node as Fields | undefined
  if (table?.kind !== 'TableNode') return undefined
  const identifier = table.table as Fields
  const name = identifierName(identifier.identifier)
  if (name === undefined) return undefined
  const schema = identifier.schema === undefined ? undefined : identifierName(identifier.schema)
  return schema === undefined ? { name } : { name, schema }
}

const identifierName = (node: unknown): string | undefined => {
  const n = node as Fields | undefined
  return n?.kind === 'IdentifierNode' && typeof n.name === 'string' ? n.name : undefined
}

/**
 * Whether compiled text is made only of what the builder writes outside quotes (names, keywords,
 * operators, `$n` parameters, numbers) and quoted names: no comment (`--`, `/*`), no semicolon,
 * no string literal, no dollar quote, no backslash or NUL. Read as PostgreSQL reads it: a quoted
 * name runs to the next lone `"` (`""` is a quote within it), whatever it holds.
 */
export function onlyQuotedNames(text: string): boolean {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c === 0x22 /* " */) {
      for (i++; ; i++) {
        if (i >= text.length) return false
        if (text.charCodeAt(i) === 0x22) {
          if (text.charCodeAt(i + 1) === 0x22) i++
          else break
        }
      }
    } else if (c === 0x27 /* ' */ || c === 0x3b /* ; */ || c === 0x5c /* \ */ || c === 0) {
      return false
    } else if ((c === 0x2d /* - */ && text.charCodeAt(i + 1) === 0x2d) || (c === 0x2f /* / */ && text.charCodeAt(i + 1) === 0x2a)) {
      return false
    } else if (c === 0x24 /* $ */ && !(text.charCodeAt(i + 1) >= 0x30 && text.charCodeAt(i + 1) <= 0x39)) {
      return false
    }
  }
  return true
}

/**
 * The executor of fn's transaction: Kysely's own, which also records the queries it compiles
 * during the request that are session-safe (and stays so through withPlugin and the like).
 */
export class SessionSafeExecutor extends DefaultQueryExecutor {
  constructor(private readonly parts: ExecutorParts, plugins: readonly KyselyPlugin[]) {
    super(parts.compiler, parts.adapter, parts.provider, [...plugins])
  }

  /** The session-safe queries this request's executors compiled. */
  get safe(): WeakSet<CompiledQuery> {
    return this.parts.safe
  }

  static of(dialect: Dialect, relations: KnownRelations, provider: ExecutorParts['provider'], plugins: readonly KyselyPlugin[]): SessionSafeExecutor {
    let made = compilers.get(dialect)
    if (!made) compilers.set(dialect, made = { compiler: dialect.createQueryCompiler(), adapter: dialect.createAdapter() })
    return new SessionSafeExecutor({ ...made, provider, relations, safe: new WeakSet() }, plugins)
  }

  override compileQuery<R = unknown>(node: RootOperationNode, queryId: QueryId): CompiledQuery<R> {
    const compiled = super.compileQuery(node, queryId) as CompiledQuery<R>
    // The same synchronous call: nothing can change the query between its compiling and this look.
    if (Object.isFrozen(compiled) && madeOfSafeNodes(node, this.parts.relations) && onlyQuotedNames(compiled.sql)) this.parts.safe.add(compiled)
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
  relations: KnownRelations
  safe: WeakSet<CompiledQuery>
  provider: { provideConnection<T>(consumer: (connection: DatabaseConnection) => Promise<T>): Promise<T> }
}
/** One compiler per dialect: compiling is synchronous, so fn's transactions can share it. */
const compilers = new WeakMap<Dialect, Pick<ExecutorParts, 'compiler' | 'adapter'>>()

/**
 * What a session-safe statement could reach by name that could change the session: any of it, and
 * no request ends with COMMIT alone (askSession reads it once per connection, so what is created
 * later is seen by connections opened after; test/session-safe-statements.test.ts holds the
 * migrations to none). Functions the app role may call that are reached as an aggregate of the
 * names let through (outside pg_catalog, such a name could resolve to a function of any schema on
 * the search path), as an operator's function, as an implicit cast, or with one argument a row can
 * be (attribute notation, which {@link knownColumn} and the table node's place keep out of safe
 * statements: listed too, as a second line, outside pg_catalog; PostgreSQL 18's own
 * `pg_restore_relation_stats(VARIADIC "any")` is volatile and would otherwise be listed), or as a
 * cast of any kind (PostgreSQL's own SQL functions cast explicitly:
 * `anytextcat`, behind `||`, runs `$1::text`; review 5), and could change the session: volatile,
 * or written in SQL or a procedural language outside PostgreSQL's own schemas (a STABLE function
 * of those may still call a volatile one). PostgreSQL's own volatile functions of one row are
 * none. And every rule run by a write, outside pg_catalog, whoever may write its table: a foreign
 * key's cascade writes a table the app role may not (review 5). And the owner's code such a
 * statement can make PostgreSQL run (review 6), conservatively: any function of the owner's not
 * written in C but skills-db's own, any view, any domain with a constraint, and any expression of
 * a table (a CHECK, a default, a generated column, an index, a policy) that calls one of
 * PostgreSQL's own functions that change the session.
 */
export const SESSION_CHANGING_REACHABLE = `
  select p.oid::pg_catalog.regprocedure::pg_catalog.text as object from pg_catalog.pg_proc p
   where pg_catalog.has_function_privilege(p.oid, 'execute')
     and ((p.proname operator(pg_catalog.=) any ('{count,sum,avg,min,max}'::pg_catalog.name[])
           and p.pronamespace operator(pg_catalog.<>) 'pg_catalog'::pg_catalog.regnamespace)
       or ((p.provolatile operator(pg_catalog.=) 'v'
            or (p.pronamespace operator(pg_catalog.<>) all (array['pg_catalog'::pg_catalog.regnamespace, 'information_schema'::pg_catalog.regnamespace])
                and p.prolang operator(pg_catalog.<>) all (array[12, 13]::pg_catalog.oid[])))
         and ((p.pronamespace operator(pg_catalog.<>) 'pg_catalog'::pg_catalog.regnamespace and p.pronargs operator(pg_catalog.>=) 1
               and p.pronargs operator(pg_catalog.-) p.pronargdefaults operator(pg_catalog.<=) case when p.provariadic operator(pg_catalog.<>) 0 then 2 else 1 end
               and exists (select from pg_catalog.pg_type t where t.oid operator(pg_catalog.=) p.proargtypes[0]
                 and (t.typname operator(pg_catalog.=) any ('{record,anyelement,anynonarray,anycompatible,anycompatiblenonarray,any}'::pg_catalog.name[])
                   or t.typtype operator(pg_catalog.=) 'c'
                   or (t.typtype operator(pg_catalog.=) 'd' and exists (select from pg_catalog.pg_type b where b.oid operator(pg_catalog.=) t.typbasetype and b.typtype operator(pg_catalog.=) 'c')))))
           or p.oid operator(pg_catalog.=) any (array(select o.oprcode::pg_catalog.oid from pg_catalog.pg_operator o))
           or p.oid operator(pg_catalog.=) any (array(select c.castfunc from pg_catalog.pg_cast c)))))
  union all
  select 'rule ' operator(pg_catalog.||) r.rulename operator(pg_catalog.||) ' on ' operator(pg_catalog.||) r.ev_class::pg_catalog.regclass::pg_catalog.text
    from pg_catalog.pg_rewrite r join pg_catalog.pg_class c on c.oid operator(pg_catalog.=) r.ev_class
   where r.ev_type operator(pg_catalog.<>) '1' and c.relnamespace operator(pg_catalog.<>) 'pg_catalog'::pg_catalog.regnamespace
  union all
  -- Code of the owner's that such a statement can make PostgreSQL run (review 6: a view, a generated
  -- column, a CHECK, a domain, a policy, an index expression, a default or a trigger calling a
  -- function of the owner's, or set_config itself): every function written in a language other than
  -- C outside PostgreSQL's own schemas but skills-db's (its migrations' own, tested to leave
  -- nothing), every view, every domain with a constraint, and every expression of a table that
  -- calls one of PostgreSQL's own functions that change the session.
  select 'function ' operator(pg_catalog.||) p.oid::pg_catalog.regprocedure::pg_catalog.text from pg_catalog.pg_proc p
   where p.prolang operator(pg_catalog.<>) all (array[12, 13]::pg_catalog.oid[])
     and p.pronamespace operator(pg_catalog.<>) all (array['pg_catalog'::pg_catalog.regnamespace, 'information_schema'::pg_catalog.regnamespace])
     and p.pronamespace::pg_catalog.regnamespace::pg_catalog.text operator(pg_catalog.<>) all ('{tenant_context,skills_db}'::pg_catalog.text[])
     and p.oid::pg_catalog.regprocedure::pg_catalog.text operator(pg_catalog.<>) all ('{resolve_api_key(text),audit_logs_append_only(),audit_signatures_append_only()}'::pg_catalog.text[])
  union all
  select 'view ' operator(pg_catalog.||) c.oid::pg_catalog.regclass::pg_catalog.text from pg_catalog.pg_class c
   where c.relkind operator(pg_catalog.=) any ('{v,m}'::"char"[])
     and c.relnamespace operator(pg_catalog.<>) all (array['pg_catalog'::pg_catalog.regnamespace, 'information_schema'::pg_catalog.regnamespace])
  union all
  select 'domain ' operator(pg_catalog.||) t.oid::pg_catalog.regtype::pg_catalog.text from pg_catalog.pg_type t
   where t.typtype operator(pg_catalog.=) 'd' and t.typnamespace operator(pg_catalog.<>) all (array['pg_catalog'::pg_catalog.regnamespace, 'information_schema'::pg_catalog.regnamespace])
     and exists (select from pg_catalog.pg_constraint k where k.contypid operator(pg_catalog.=) t.oid)
  union all
  select 'expression on ' operator(pg_catalog.||) e.relation::pg_catalog.regclass::pg_catalog.text from (
      select k.conrelid as relation, k.conbin::pg_catalog.text as tree from pg_catalog.pg_constraint k where k.conbin is not null and k.conrelid operator(pg_catalog.<>) 0
      union all select d.adrelid, d.adbin::pg_catalog.text from pg_catalog.pg_attrdef d
      union all select i.indrelid, coalesce(i.indexprs::pg_catalog.text, '') operator(pg_catalog.||) coalesce(i.indpred::pg_catalog.text, '') from pg_catalog.pg_index i
      union all select o.polrelid, coalesce(o.polqual::pg_catalog.text, '') operator(pg_catalog.||) coalesce(o.polwithcheck::pg_catalog.text, '') from pg_catalog.pg_policy o) e
   where e.tree operator(pg_catalog.~) (':funcid (' operator(pg_catalog.||) (select pg_catalog.string_agg(f.oid::pg_catalog.text, '|') from pg_catalog.pg_proc f
       where f.pronamespace operator(pg_catalog.=) 'pg_catalog'::pg_catalog.regnamespace
         and f.proname operator(pg_catalog.=) any ('{set_config,pg_advisory_lock,pg_advisory_lock_shared,pg_try_advisory_lock,pg_try_advisory_lock_shared,setseed,pg_notify}'::pg_catalog.name[])) operator(pg_catalog.||) ') ')`
