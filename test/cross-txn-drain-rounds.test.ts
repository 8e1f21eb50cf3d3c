/** Review of the cross-register txns: one datagram from a hostile sequencer makes drainCross do O(R^2) register evaluations. */
import { describe, expect, it } from 'vitest';
import { DeltaOp } from '../wire/delta.js';
import { MsgType, encodeMessage } from '../wire/messages.js';
import type { RegisterSpec } from '../core/pair/types.js';
import { Follower } from '../core/pair/follower.js';
import { harness, set } from './helpers.js';

describe('cross-register txn: drainCross rounds', () => {
  it('a chain of part records across R registers, released by one record, costs R rounds over R registers', () => {
    const R = 200;
    const regs: RegisterSpec[] = Array.from({ length: R }, (_, i) => ({ name: `r${String(i).padStart(3, '0')}`, kind: 'map' }));
    const h = harness(regs);
    expect(h.settle()).toBe(true);
    let pn = 500_000;
    const ver = (n: string) => h.b.pair.register(n).version;
    // r_k's next record: a part of an anchor in r_{k+1} at its next version (held: the anchor is below).
    for (let k = 0; k < R - 1; k++) {
      const name = regs[k].name;
      const anchor = regs[k + 1].name;
      const m = encodeMessage({
        type: MsgType.Collapse,
        register: name,
        version: ver(name) + 1,
        hash: { hi: 1, lo: 2 },
        entries: [
          {
            origin: 1,
            seq: 1,
            verdict: 'committed',
            delta: { op: DeltaOp.Part, anchor, anchorVersion: ver(anchor) + 1, delta: set('z', 'z') },
          },
        ],
      });
      h.b.pair.handlePayload(h.world.now, pn++, m);
    }
    let calls = 0;
    const orig = Follower.prototype.drainHeld;
    Follower.prototype.drainHeld = function (this: Follower, now: number) {
      calls++;
      return orig.call(this, now);
    };
    const last = regs[R - 1].name;
    const trigger = encodeMessage({
      type: MsgType.Collapse,
      register: last,
      version: ver(last) + 1,
      hash: { hi: 1, lo: 2 },
      entries: [{ origin: 1, seq: 1, verdict: 'committed', delta: set('z', 'z') }],
    });
    h.b.pair.handlePayload(h.world.now, pn++, trigger);
    Follower.prototype.drainHeld = orig;
    expect(calls).toBeLessThan(10 * R);
  });
});
