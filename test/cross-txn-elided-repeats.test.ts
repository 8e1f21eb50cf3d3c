/** Review 3 (pre-existing, rev 1.9): one own candidate elided N times is restored N times (N x its size from a tiny message). */
import { describe, expect, it } from 'vitest';
import { MsgType, encodeMessage, type CollapseEntry } from '../wire/messages.js';
import type { RegisterSpec } from '../core/pair/types.js';
import { harness, set } from './helpers.js';

const REGS: RegisterSpec[] = [{ name: 'kv', kind: 'map' }];

describe('cross-register txn: repeated elided entries', () => {
  it('a Collapse eliding the same own candidate 4000 times is refused, not expanded', () => {
    const h = harness(REGS);
    expect(h.settle()).toBe(true);
    h.cut();
    const id = h.b.pair.propose(h.world.now, 'kv', set('k', 'v'.repeat(16 * 1024)));
    const v = h.b.pair.register('kv').version;
    const N = 4000;
    const entries: CollapseEntry[] = Array.from({ length: N }, () => ({
      origin: id.origin,
      seq: id.seq,
      verdict: 'committed',
      delta: set('k', 'x'),
    }));
    const msg = encodeMessage({
      type: MsgType.Collapse,
      register: 'kv',
      version: v + 1,
      hash: { hi: 0, lo: 0 },
      entries,
      elided: entries.map((_, i) => i),
    });
    const before = process.memoryUsage().arrayBuffers;
    h.b.pair.handlePayload(h.world.now, 900_000, msg);
    // One pending value left out 4,000 times is not expanded 4,000 times (16 KiB each: 64 MB).
    expect(process.memoryUsage().arrayBuffers - before).toBeLessThan(32 << 20);
    const drops = h.b.pair.stats.drops as Record<string, number>;
    expect(drops['elided-unknown'] ?? 0).toBeGreaterThan(0);
  });
});
