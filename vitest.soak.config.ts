import { defineConfig } from 'vitest/config';

// `make soak`: long wrapper survival runs (test/soak), one file at a time.
export default defineConfig({
  test: {
    include: ['test/soak/**/*.soak.ts'],
    testTimeout: 1_800_000,
    hookTimeout: 120_000,
    pool: 'threads',
    fileParallelism: false,
  },
});
