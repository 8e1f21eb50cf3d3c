import { describe, expect, it } from 'vitest';
import { formatScaleBench, runScaleBench } from '../bench/scale.js';
import { portBase } from './ports.js';

// `bench scale` at a tiny size, so a change that breaks it fails here rather than on the day the
// figures are re-measured: a real hub spookd, peers speaking ETCP/ESTP from the load generator's
// process, a real redis-server. Counts are asserted, no timing (none comes from a timed test).
// redis-server missing is a failure: `make test` installs it (make redis-deps).
describe('bench scale', () => {
  it('runs a hub with a few peers: every pair entangles, every commit and key lands, all re-entangle after an outage, Redis holds the same keys', async () => {
    const r = await runScaleBench({
      peers: 3,
      keys: 3000,
      valueBytes: 32,
      commits: 60,
      inflight: 16,
      outageMs: 500,
      fsync: 'always',
      // Its own ports, below Linux's ephemeral range (test/ports.ts): hub +0, peers +1 (on 127.1.x.y), redis +2.
      basePort: portBase('bench-scale.test.ts'),
      loadLimitMs: 60_000,
      hubRssLimitMb: 4096,
      waitMs: 60_000,
      rampMs: 300,
      redis: true,
    });
    expect(r.peers).toBe(3);
    expect(r.entangledPeers).toBe(3);
    expect(r.connectMs).not.toBeNull();
    expect(r.notEntangled).toBeNull();
    expect(r.latency.committed).toBe(60);
    expect(r.latency.stopped).toBe('all issued');
    expect(r.latencyWithKeys.committed).toBe(60);
    expect(r.latency.p99Ms).toBeGreaterThanOrEqual(r.latency.p50Ms);
    // Split by which end sequences each pair: every set counted once, on one side or the other.
    const { hub, peer } = r.latency.bySequencer;
    expect(hub.sets + peer.sets).toBe(60);
    for (const x of [hub, peer]) if (x.sets > 0) expect(x.p99Ms!).toBeGreaterThanOrEqual(x.p50Ms!);
    expect(r.loadStopped).toBe('all committed');
    expect(r.keysReached).toBe(3000);
    expect(r.hubRssAfterKeysMb).toBeGreaterThan(0);
    expect(r.reentangleAllMs).not.toBeNull();
    expect(r.entangledAfterOutage).toBe(3);
    expect(r.redis?.keys).toBe(3000);
    expect(r.redis!.usedMemoryPerKeyBytes).toBeGreaterThan(32);
    expect(r.redis!.memoryUsageSampleBytes).toBeGreaterThan(32);
    expect(r.memoryPerKeyVsRedis).not.toBeNull();
    expect(formatScaleBench(r).join('\n')).toContain('per key');
  }, 120_000);
});
