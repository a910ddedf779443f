import { defineConfig } from 'vitest/config'

export default defineConfig({
  test: {
    globalSetup: ['test/global-setup.ts'],
    include: ['test/**/*.test.ts'],
    exclude: ['test/faults/**'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Files run in parallel, each on its own database; two cores, so keep it modest.
    maxWorkers: 2,
  },
})
