import { describe, expect, it } from 'vitest';
import { HalfPair } from '../core/pair/halfpair.js';
import { PairState } from '../core/pair/lifecycle.js';
import { ProposeError } from '../core/pair/replica.js';
import { type MapState } from '../core/register/map.js';
import { DeltaOp, type Delta } from '../wire/delta.js';
import { FrameType, MAX_KEY_LEN } from '../wire/constants.js';
import { encodeFrame } from '../wire/header.js';
import { MsgType, encodeMessage, type FragmentMsg, type Message } from '../wire/messages.js';
import { SimWorld, type SimEndpoint } from '../testing/sim/world.js';

const te = new TextEncoder();
const MiB = 1024 * 1024;

/** Deterministic bytes, different per seed (so a misplaced fragment changes the value). */
function pattern(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = x & 0xff;
  }
  return out;
}

const set = (key: string | Uint8Array, value: Uint8Array): Delta => ({
  op: DeltaOp.Set,
  key: typeof key === 'string' ? te.encode(key) : key,
  value,
});

function valueAt(ep: SimEndpoint, key: Uint8Array): Uint8Array | undefined {
  const st = ep.pair.register('kv').state as MapState;
  return st.get(key)?.value;
}

function world(seed: number, faults: { loss: number; reorder: number; dup: number }, maxValueBytes = MiB) {
  const w = new SimWorld(seed, { ...faults, minDelayMs: 1, maxDelayMs: 4 });
  const [a, b] = w.addPair(['A', 'B'], {
    pairId: 7,
    seed: 99,
    registers: [{ name: 'kv', kind: 'map', quota: { maxValueBytes } }],
  });
  w.run(2000, () => a.pair.state === PairState.ENTANGLED && b.pair.state === PairState.ENTANGLED);
  return { w, a, b };
}

const same = (x: Uint8Array | undefined, y: Uint8Array): boolean => x !== undefined && Buffer.compare(Buffer.from(x), Buffer.from(y)) === 0;

describe('large values (§3.4 fragmentation)', () => {
  it('a 1 MiB value proposed by each end commits identically at both through 1% loss, reordering and duplication', () => {
    const { w, a, b } = world(11, { loss: 0.01, reorder: 0.1, dup: 0.01 });
    expect(a.pair.state).toBe(PairState.ENTANGLED);
    const v1 = pattern(MiB, 1);
    const v2 = pattern(MiB, 2);
    const k1 = te.encode('big-from-follower');
    const k2 = te.encode('big-from-sequencer');
    const start = w.now;
    const bytes0 = w.net.stats.bytesSent;
    const sent0 = w.net.stats.sent;
    w.at(w.now + 1, () => {
      b.pair.propose(w.now, 'kv', set(k1, v1)); // the follower: a fragmented Propose, then a fragmented Collapse back
      a.pair.propose(w.now, 'kv', set(k2, v2)); // the sequencer: a fragmented Collapse
      b.pair.propose(w.now, 'kv', set('small', te.encode('after'))); // small traffic goes on beside
    });
    const done = w.run(start + 60_000, () =>
      [a, b].every((e) => same(valueAt(e, k1), v1) && same(valueAt(e, k2), v2) && valueAt(e, te.encode('small')) !== undefined),
    );
    expect(done).toBe(true);
    w.run(w.now + 3000, () => a.pair.state === PairState.ENTANGLED && b.pair.state === PairState.ENTANGLED);
    const ra = a.pair.register('kv');
    const rb = b.pair.register('kv');
    expect(rb.version).toBe(ra.version);
    expect(rb.hash).toEqual(ra.hash);
    const ms = w.now - start;
    const fa = a.pair.fragments;
    const fb = b.pair.fragments;
    console.log(
      `2 x 1 MiB through the sim (1% loss, 10% reorder): ${ms} ms simulated, ${w.net.stats.sent - sent0} datagrams, ` +
        `${w.net.stats.bytesSent - bytes0} bytes on the wire; fragments sent A ${fa.fragmentsSent} (resent ${fa.fragmentsResent}), ` +
        `B ${fb.fragmentsSent} (resent ${fb.fragmentsResent})`,
    );
    // Selective retransmission: a lost fragment is resent alone, never the whole message.
    expect(fa.fragmentsResent + fb.fragmentsResent).toBeLessThan((fa.fragmentsSent + fb.fragmentsSent) * 0.25);
    expect(fa.reassemblyBytes + fb.reassemblyBytes).toBe(0);
  });
});

// Keep the imports used by later cases.
void [ProposeError, MAX_KEY_LEN, FrameType, encodeFrame, MsgType, encodeMessage, HalfPair];
export type { FragmentMsg, Message };
