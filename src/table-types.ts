import type { Insertable, Selectable, Updateable } from 'kysely'
import type { DB } from './db-types.ts'

/**
 * A table's row as a query returns it, as an insert takes it, and as an update takes it: Kysely's
 * Selectable / Insertable / Updateable of the generated table type, by table name.
 *
 * @example
 * import type { NewTableRow, TableRow } from 'skills-db'
 * type Skill = TableRow<'skills'>          // id: string, created_at: Date, …
 * type NewSkill = NewTableRow<'skills'>    // id and tenant_id optional (the database fills them)
 */
export type TableRow<T extends keyof DB> = Selectable<DB[T]>
/** A row of table `T` as an insert takes it: the columns the database fills in (`Generated`) and the nullable ones optional. See {@link TableRow}. */
export type NewTableRow<T extends keyof DB> = Insertable<DB[T]>
/** A row of table `T` as an update's `set` takes it: every column optional. See {@link TableRow}. */
export type TableRowUpdate<T extends keyof DB> = Updateable<DB[T]>
