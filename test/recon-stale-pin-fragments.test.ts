/**
 * A follower's reconciliation session whose pin the sequencer does not hold (a ReconMeta naming a
 * version it never pinned, or a pin it replaced) starts over after STALLS_BEFORE_RESTART silent
 * timeouts (§8.2). Pieces of fragmented messages from the sequencer defer those timeouts (§3.4):
 * while they kept arriving — the pieces of any register's records — the session never timed
 * out, and the register stayed reconciling for good with an honest sequencer beside it.
 */
import { describe, expect, it } from 'vitest';
import { HalfPair } from '../core/pair/halfpair.js';
import { PairState } from '../core/pair/lifecycle.js';
import { ProposeError } from '../core/pair/replica.js';
import { SimWorld } from '../testing/sim/world.js';
import { DeltaOp } from '../wire/delta.js';
import { MsgType, encodeMessage } from '../wire/messages.js';
import { enc } from './helpers.js';

const REGS = [
  // A short log: a follower 400 versions behind reconciles instead of replaying it.
  {
    name: 'kv',
    kind: 'map' as const,
    maxPending: 64,
    quota: { maxKeys: 5000, maxBytes: 4 << 20 },
    log: { maxRecords: 32, maxBytes: 1 << 20 },
  },
  { name: 'cfg', kind: 'map' as const, maxPending: 64, quota: { maxKeys: 5000, maxBytes: 4 << 20 } },
];

describe('a reconciliation session on a pin the sequencer does not hold', () => {
  it('starts over while fragments of other messages keep arriving', () => {
    const world = new SimWorld(5, { loss: 0, dup: 0, reorder: 0, minDelayMs: 1, maxDelayMs: 2 });
    const opts = { pairId: 6, seed: 11, registers: REGS };
    const [A, B] = world.adopt(
      ['A', 'B'],
      [new HalfPair({ ...opts, localId: 1, peerId: 2 }, 0), new HalfPair({ ...opts, localId: 2, peerId: 1 }, 0)],
    );
    const kv = (ep: typeof A): ReturnType<HalfPair['register']> => ep.pair.register('kv');
    expect(world.run(5000, () => A.pair.state === PairState.ENTANGLED && B.pair.state === PairState.ENTANGLED)).toBe(true);
    let n = 0;
    const write = (reg: string, size: number): void => {
      try {
        A.pair.propose(world.now, reg, { op: DeltaOp.Set, key: enc(`${reg}${n++ % 100}`), value: new Uint8Array(size).fill(n & 0xff) });
      } catch (e) {
        if (!(e instanceof ProposeError)) throw e;
      }
    };
    // The follower falls behind on kv (a partition while the sequencer writes): it reconciles.
    world.net.setLink('A', 'B', false);
    world.net.setLink('B', 'A', false);
    for (let i = 0; i < 400; i++) world.at(world.now + 1 + i, () => write('kv', 20));
    world.run(world.now + 3000);
    world.net.setLink('A', 'B', true);
    world.net.setLink('B', 'A', true);
    // The first response of its session: a ReconMeta at a version the sequencer never pinned.
    expect(world.run(world.now + 5000, () => kv(B).follower?.requester !== undefined, 1)).toBe(true);
    B.pair.handlePayload(
      world.now,
      1 << 30,
      encodeMessage({
        type: MsgType.ReconMeta,
        register: 'kv',
        targetVersion: 2 ** 40,
        hash: { hi: 0, lo: 0 },
        size: 0,
        origins: [],
        rejections: [],
      }),
    );
    world.drain(B);
    // The sequencer writes large values to cfg: their records travel as fragments, without end.
    const until = world.now + 60_000;
    for (let t = world.now + 5; t < until; t += 5) world.at(t, () => write('cfg', 3000));
    const caughtUp = world.run(until, () => kv(B).version === kv(A).version && !kv(B).reconciling);
    expect({ caughtUp, follower: kv(B).version, sequencer: kv(A).version }).toEqual({
      caughtUp: true,
      follower: kv(A).version,
      sequencer: kv(A).version,
    });
  }, 30_000);
});
