import { defineConfig } from 'vitest/config'

// The consumer test (npm run test:consumer): packs skills-db, installs the tarball into a scratch
// app from the npm registry, and uses it as an app would. Slow, and needs the registry: kept out of npm test.
export default defineConfig({
  test: {
    globalSetup: ['test/global-setup.ts'],
    include: ['test/consumer/**/*.test.ts'],
    testTimeout: 300_000,
    hookTimeout: 600_000,
    maxWorkers: 1,
  },
})
