import { collation } from '../../src/online/collation.ts'
import { blockLaws } from '../support/block-laws.ts'

blockLaws('online/collation', {
  setup: async () => {},
  step: () => collation('skills_db.toy_internal', 'C'),
})
