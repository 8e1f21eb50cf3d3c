import { describe, expect, it } from 'vitest';
import { etcdVersion, formatLibraryBench, runLibraryBench } from '../bench/library.js';
import { portBase } from './ports.js';

// `bench library` at a tiny size, so a change that breaks it fails here rather than on the day
// the figures are re-measured: both systems really run (two spookd, three etcd members), every
// set is acknowledged as committed and every one is delivered to the far end's watcher. No
// figure is asserted (none comes from a timed test). etcd missing is a failure: `make test`
// installs it (make etcd-deps).
describe('bench library', () => {
  it('runs Spook (pair and domain, library only) and etcd (etcd3): every set acknowledged, every one seen by the watcher', async () => {
    expect(etcdVersion()).toMatch(/^3\./);
    const r = await runLibraryBench({
      sets: 200,
      inflight: 32,
      valueBytes: 100,
      fsync: 'always',
      // Its own ports, below Linux's ephemeral range (test/ports.ts): spookd at +0..+2, etcd at +10..+15.
      basePort: portBase('bench-library.test.ts'),
      domain: true,
      limitMs: 20_000,
    });
    expect(r.rows.map((x) => x.system)).toEqual(['spook-pair', 'etcd', 'spook-domain']);
    for (const x of r.rows) {
      expect(x.acked, x.system).toBe(200);
      expect(x.watch?.entries, x.system).toBe(200);
      expect(x.watch!.events, x.system).toBeGreaterThan(0);
      expect(x.watch!.events, x.system).toBeLessThanOrEqual(200);
      expect(x.setsPerSec, x.system).toBeGreaterThan(0);
      expect(x.p99Ms, x.system).toBeGreaterThanOrEqual(x.p50Ms);
    }
    expect(r.ratios.setsPerSec).toBeGreaterThan(0);
    expect(r.ratios.domainEntriesPerSec).toBeGreaterThan(0);
    expect(formatLibraryBench(r).join('\n')).toContain('spook-domain');
  }, 90_000);
});
