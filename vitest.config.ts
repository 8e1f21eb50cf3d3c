import { defineConfig } from 'vitest/config';

/**
 * Test files that `make test` runs two at a time (`--project sims --maxWorkers=2`), before the
 * rest (`--project serial --maxWorkers=1`, one file at a time): simulations
 * and codecs in one process, no socket, process, BPF hook, namespace or wall-clock assertion (a
 * seeded simulator's time is its own), so the file beside them cannot change what they see. BPF
 * interception is host-wide, and timing assertions were seen to fail with two files at once on 2
 * cores. A file belongs here only if it keeps to that; a new file is serial by default. (Vitest
 * 3.2 sizes one pool for all projects, so the two groups are two runs, not one config.)
 */
const TWO_AT_A_TIME = [
  'test/domain.test.ts',
  'test/map-table-model.test.ts',
  'test/sim.test.ts',
  'test/domain-catchup.test.ts',
  'test/domain-limits.test.ts',
  'test/register-map.test.ts',
  'test/large-values.test.ts',
  'test/wire-fast-paths.test.ts',
  'test/wire-codec.test.ts',
  'test/sim-sync-delay.test.ts',
  'test/estp-fuzz.test.ts',
  'test/sim-reloads.test.ts',
  'test/recon-diff.test.ts',
  'test/adversary-cores.test.ts',
  'test/pair-active.test.ts',
  'test/stream-catchup.test.ts',
  'test/halfpair.test.ts',
  'test/feed-domain-sim.test.ts',
  'test/feed-pair-sim.test.ts',
  'test/qn-outcomes.test.ts',
];

export default defineConfig({
  test: {
    testTimeout: 120_000,
    pool: 'threads',
    projects: [
      { extends: true, test: { name: 'sims', include: TWO_AT_A_TIME } },
      { extends: true, test: { name: 'serial', include: ['test/**/*.test.ts'], exclude: TWO_AT_A_TIME } },
    ],
  },
});
