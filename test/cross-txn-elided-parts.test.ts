/**
 * Review of the cross-register txns: a part record (op 7) must never be elided by the sequencer
 * (the follower would fill it from the wrong register's own list).
 */
import { describe, expect, it } from 'vitest';
import { DeltaOp } from '../wire/delta.js';
import type { RegisterSpec } from '../core/pair/types.js';
import type { MapState } from '../core/register/map.js';
import { cross, enc, harness, set } from './helpers.js';

const REGS: RegisterSpec[] = [
  { name: 'kv', kind: 'map' },
  { name: 'kv2', kind: 'map' },
];
const text = (b: Uint8Array | undefined): string | undefined => (b ? new TextDecoder().decode(b) : undefined);

describe('cross-register txn: elided part records', () => {
  it('a follower cross txn with a large part on kv2, while kv2 has its own pending candidate with the same seq', () => {
    const h = harness(REGS);
    expect(h.settle()).toBe(true);
    const bad: string[] = [];
    h.world.onEvent = (ep, ev) => {
      h.events.push({ ep: ep.name, ev });
    };
    // kv2's own seq 1 (a plain write) and kv's seq 1 (a cross txn whose kv2 part is larger than a payload).
    const own = h.b.pair.propose(h.world.now, 'kv2', set('mine', 'plain'));
    const big = 'x'.repeat(3000);
    const id = h.b.pair.propose(h.world.now, 'kv', cross(['kv', set('t', '1')], ['kv2', set('t', big)]));
    expect(own.seq).toBe(id.seq);
    h.world.drain(h.b);
    const kv2b = h.b.pair.register('kv2').state as MapState;
    const kvb = h.b.pair.register('kv').state as MapState;
    h.world.run(
      h.world.now + 60_000,
      () => {
        const a = kvb.get(enc('t')) !== undefined;
        const b = kv2b.get(enc('t')) !== undefined;
        if (a !== b) bad.push(`torn at ${h.world.now}: kv ${a} kv2 ${b}`);
        return h.aligned();
      },
      0,
    );
    const mism = h.events.filter((e) => JSON.stringify(e.ev).includes('hash-mismatch') || JSON.stringify(e.ev).includes('elided'));
    expect(mism.map((e) => JSON.stringify(e.ev))).toEqual([]); // no hash mismatch in honest operation
    expect(bad).toEqual([]);
    expect(text(kv2b.get(enc('t'))?.value)).toBe(big);
  });
});

describe('cross-register txn: elided part record, worst case', () => {
  it('a cas the sequencer rejects is reported committed at the follower (its effect equals the part substituted for it)', () => {
    const h = harness(REGS);
    expect(h.settle()).toBe(true);
    const big = 'x'.repeat(3000);
    // kv2 seq 1: cas on a key that does not exist yet; kv seq 1: a cross whose kv2 part sets that key.
    const id = h.b.pair.propose(h.world.now, 'kv', cross(['kv', set('a', '1')], ['kv2', set('t', big)]));
    h.world.drain(h.b);
    h.world.run(h.world.now + 1);
    const own = h.b.pair.propose(h.world.now, 'kv2', { op: DeltaOp.Cas, key: enc('t'), expect: 0, value: enc(big) });
    h.world.drain(h.b);
    expect(own.seq).toBe(id.seq);
    expect(h.settle()).toBe(true);
    const outs = h.events
      .filter((e) => e.ev.type === 'outcome')
      .map((e) => e.ev as { register: string; verdict: string; version: number; reason?: string });
    const kv2 = outs.find((o) => o.register === 'kv2')!;
    expect(kv2.verdict).toBe('rejected'); // what the sequencer decided
  });
});
