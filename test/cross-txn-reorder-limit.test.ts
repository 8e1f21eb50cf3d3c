/** Review of the cross-register txns: a hostile sequencer replaces held records with larger copies, past the reorder byte limit. */
import { describe, expect, it } from 'vitest';
import { DeltaOp } from '../wire/delta.js';
import { MsgType, encodeMessage } from '../wire/messages.js';
import type { RegisterSpec } from '../core/pair/types.js';
import { harness, set } from './helpers.js';

const REGS: RegisterSpec[] = [
  { name: 'kv', kind: 'map', quota: { maxValueBytes: 64 * 1024 } },
  { name: 'kv2', kind: 'map', quota: { maxValueBytes: 64 * 1024 } },
];

describe('cross-register txn: reorder byte limit', () => {
  it('held records replaced by differing larger copies stay within reorderByteLimit (max(1 MiB, 4 x maxValueBytes))', () => {
    const h = harness(REGS);
    expect(h.settle()).toBe(true);
    const v = h.b.pair.register('kv').version;
    const rec = (version: number, value: string) =>
      encodeMessage({
        type: MsgType.Collapse,
        register: 'kv',
        version,
        hash: { hi: 1, lo: 2 },
        entries: [{ origin: 1, seq: 1, verdict: 'committed', delta: set('k', value) }],
      });
    let pn = 100_000;
    for (let i = 2; i < 250; i++) h.b.pair.handlePayload(h.world.now, pn++, rec(v + i, 'x'));
    const big = 'y'.repeat(60 * 1024);
    for (let i = 2; i < 250; i++) h.b.pair.handlePayload(h.world.now, pn++, rec(v + i, big));
    const f = h.b.pair.register('kv').follower as unknown as { reorderBytes: number };
    expect(f.reorderBytes).toBeLessThanOrEqual(1 << 20);
    void DeltaOp;
  });
});
