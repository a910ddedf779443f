import { defineConfig } from 'vitest/config'
import { TEST_AUDIT_KEY, TEST_TENANT_KEY } from './test/support/tenant-key.ts'

// The heavier fault tests: kill -9 trials, lock contention, lost connections (npm run test:faults).
export default defineConfig({
  test: {
    globalSetup: ['test/global-setup.ts'],
    // withTenant's key (see test/support/tenant-key.ts); the template's migration stores it.
    env: { SKILLS_DB_TENANT_KEY: TEST_TENANT_KEY, SKILLS_DB_AUDIT_KEY: TEST_AUDIT_KEY },
    include: ['test/faults/**/*.test.ts'],
    testTimeout: 300_000,
    hookTimeout: 300_000,
    maxWorkers: 1,
  },
})
