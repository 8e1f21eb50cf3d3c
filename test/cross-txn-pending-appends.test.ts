/** Review of the cross-register txns: a stream append by default "where every own pending candidate leaves the stream" is decided out of proposal order. */
import { describe, expect, it } from 'vitest';
import type { RegisterSpec } from '../core/pair/types.js';
import { append, cross, enc, harness, set } from './helpers.js';

const REGS: RegisterSpec[] = [
  { name: 'kv', kind: 'map' },
  { name: 's', kind: 'stream' },
];

describe('cross-register txn: pending appends across registers', () => {
  for (const side of ['a', 'b'] as const)
    it(`${side}: a plain append, then a cross txn appending at nextAppendOffset: both commit`, () => {
      const h = harness(REGS);
      expect(h.settle()).toBe(true);
      const ep = h[side];
      const s = ep.pair.register('s');
      const first = ep.pair.propose(h.world.now, 's', append(s.nextAppendOffset, 'x'));
      const off = s.nextAppendOffset;
      expect(off).toBe(1);
      const second = ep.pair.propose(h.world.now, 'kv', cross(['kv', set('k', 'v')], ['s', append(off, 'y')]));
      h.world.drain(ep);
      expect(h.settle()).toBe(true);
      const out = (id: { origin: number; seq: number }, r: string) =>
        h.events.map((e) => e.ev).find((ev) => ev.type === 'outcome' && ev.register === r && ev.origin === id.origin && ev.seq === id.seq);
      expect(out(first, 's')).toMatchObject({ verdict: 'committed' });
      expect(out(second, 'kv')).toMatchObject({ verdict: 'committed' });
      void enc;
    });
});
