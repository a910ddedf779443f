import { defineConfig } from 'vitest/config'
import { TEST_AUDIT_KEY, TEST_TENANT_KEY } from './test/support/tenant-key.ts'

export default defineConfig({
  test: {
    globalSetup: ['test/global-setup.ts'],
    // withTenant's key (see test/support/tenant-key.ts); the template's migration stores it.
    env: { SKILLS_DB_TENANT_KEY: TEST_TENANT_KEY, SKILLS_DB_AUDIT_KEY: TEST_AUDIT_KEY },
    include: ['test/**/*.test.ts'],
    exclude: ['test/faults/**', 'test/consumer/**'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Files run in parallel, each on its own database; two cores, so keep it modest.
    maxWorkers: 2,
  },
})
