import { sql } from 'kysely'
import { foreignKey } from '../../src/online/foreign-key.ts'
import { blockLaws } from '../support/block-laws.ts'

const setup = async (db: Parameters<Parameters<typeof blockLaws>[1]['setup']>[0]) => void (await sql`
  create table parent (t text, id int, primary key (t, id));
  create table child (id int primary key, t text not null, parent_id int);
  insert into parent values ('a', 1), ('b', 1);
  insert into child values (1, 'a', 1), (2, 'b', 1), (3, 'a', null)`.execute(db))

blockLaws('online/foreign-key', {
  setup,
  step: () => foreignKey({ table: 'child', name: 'child_parent_fk', columns: ['t', 'parent_id'], references: { table: 'parent', columns: ['t', 'id'] } }),
})

blockLaws('online/foreign-key (on delete set null of one column)', {
  setup,
  step: () => foreignKey({
    table: 'child', name: 'child_parent_fk', columns: ['t', 'parent_id'], references: { table: 'parent', columns: ['t', 'id'] }, onDelete: { setNull: ['parent_id'] },
  }),
})
