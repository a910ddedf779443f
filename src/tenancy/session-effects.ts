import type { OperationNode } from 'kysely'

/**
 * Whether a statement Kysely's query builder made can change nothing of the session but its
 * transaction's rows: a select, insert, update or delete with no `sql` fragment and no function
 * call anywhere in it. Such a statement sets no setting, prepares, declares, listens, locks
 * (advisory) or creates nothing, and cannot end its transaction: only SQL written by hand
 * (`sql`…``, `CompiledQuery.raw`) or a function can. The app role owns no function, view,
 * trigger or operator a builder statement could reach (test/security.test.ts). A request whose
 * statements are all of this kind ends with COMMIT alone: withTenant's check that fn left the
 * transaction entered, and its clean-up, have nothing to find (issue 18: about 35 µs of the
 * server's a request). Anything else, or a node of a kind not known here, is answered false.
 */
export function leavesSessionAsIs(node: OperationNode | undefined): boolean {
  return node !== undefined && ROOTS.has(node.kind) && !reaches(node)
}

const ROOTS = new Set(['SelectQueryNode', 'InsertQueryNode', 'UpdateQueryNode', 'DeleteQueryNode'])
/** What can do anything: SQL written by hand, and a function (or aggregate) of any name. */
const ANYTHING = new Set(['RawNode', 'FunctionNode', 'AggregateFunctionNode'])
/** Nodes whose fields hold the statement's values (bound parameters), not nodes: not looked into. */
const VALUES = new Set(['ValueNode', 'PrimitiveValueListNode'])

/** SQL the builder itself writes as a raw fragment: an order's direction (`orderBy('x', 'desc')`). */
const KEYWORDS = new Set(['asc', 'desc'])

function reaches(node: OperationNode): boolean {
  if (node.kind === 'RawNode' && isKeyword(node)) return false
  if (ANYTHING.has(node.kind)) return true
  if (VALUES.has(node.kind)) return false
  for (const field of Object.values(node)) {
    for (const child of Array.isArray(field) ? field : [field]) {
      if (isNode(child) && reaches(child)) return true
    }
  }
  return false
}

const isKeyword = (node: OperationNode) => {
  const raw = node as { sqlFragments?: readonly string[]; parameters?: readonly unknown[] }
  return raw.parameters?.length === 0 && raw.sqlFragments?.length === 1 && KEYWORDS.has(raw.sqlFragments[0]!.trim().toLowerCase())
}

const isNode = (value: unknown): value is OperationNode =>
  typeof value === 'object' && value !== null && typeof (value as { kind?: unknown }).kind === 'string'
