import { defineConfig } from 'vitest/config'

// The heavier fault tests: kill -9 trials, lock contention, lost connections (npm run test:faults).
export default defineConfig({
  test: {
    globalSetup: ['test/global-setup.ts'],
    include: ['test/faults/**/*.test.ts'],
    testTimeout: 300_000,
    hookTimeout: 300_000,
    maxWorkers: 1,
  },
})
