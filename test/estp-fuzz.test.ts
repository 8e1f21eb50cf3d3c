import { describe, expect, it } from 'vitest';
import { HalfPair } from '../core/pair/halfpair.js';
import { PairState } from '../core/pair/lifecycle.js';
import { ProposeError } from '../core/pair/replica.js';
import type { SpookEvent } from '../core/pair/events.js';
import { EstpFuzzer } from '../testing/sim/fuzz-estp.js';
import { SimWorld, type SimEndpoint } from '../testing/sim/world.js';
import { DeltaOp } from '../wire/delta.js';
import { enc } from './helpers.js';

const PAYLOADS = 100_000;
const REGS = [
  { name: 'kv', kind: 'map' as const, maxPending: 64, quota: { maxKeys: 5000, maxBytes: 4 << 20 } },
  { name: 's', kind: 'stream' as const, maxPending: 64, quota: { maxKeys: 1, maxBytes: 4 << 20 } },
];

describe('ESTP fuzz from the authorised peer', () => {
  // Attack: the peer of a healthy pair (an authenticated, authorised host) sends 100,000
  // hostile payloads — random octets and every message type with extreme or mutated
  // fields — to the sequencer and to the follower. Nothing may escape the core, memory
  // stays bounded, and the pair keeps committing once the peer behaves.
  it('100,000 fuzzed payloads into both roles: no exception escapes, memory bounded, the pair keeps committing', () => {
    const world = new SimWorld(Number(process.env.FUZZ_SEED ?? 13), { loss: 0.02, dup: 0.01, reorder: 0.05, minDelayMs: 1, maxDelayMs: 4 });
    const opts = { pairId: 6, seed: 2024, registers: REGS };
    const [A, B] = world.adopt(
      ['A', 'B'],
      [new HalfPair({ ...opts, localId: 1, peerId: 2 }, 0), new HalfPair({ ...opts, localId: 2, peerId: 1 }, 0)],
    );
    const outcomes = new Map<string, string>();
    world.onEvent = (ep: SimEndpoint, ev: SpookEvent) => {
      if (ev.type === 'outcome') outcomes.set(`${ep.name}:${ev.seq}`, ev.verdict);
    };
    expect(world.run(5000, () => A.pair.state === PairState.ENTANGLED && B.pair.state === PairState.ENTANGLED)).toBe(true);
    const write = (ep: SimEndpoint, i: number): number | undefined => {
      try {
        return ep.pair.propose(world.now, 'kv', { op: DeltaOp.Set, key: enc(`${ep.name}${i % 300}`), value: enc(`v${i}`) }).seq;
      } catch (e) {
        if (e instanceof ProposeError) return undefined;
        throw e;
      }
    };
    const fuzz = new EstpFuzzer(Number(process.env.FUZZ_SEED ?? 99), ['kv', 's'], () => A.pair.register('kv').version);
    const escaped: string[] = [];
    const heap0 = process.memoryUsage().heapUsed;
    let pn = 1_000_000;
    for (let i = 0; i < PAYLOADS; i++) {
      const target = i % 2 === 0 ? A : B;
      try {
        target.pair.handlePayload(world.now, pn++, fuzz.payload());
      } catch (e) {
        escaped.push(`${target.name}: ${(e as Error).stack?.split('\n').slice(0, 3).join(' | ')}`);
      }
      if (i % 50 === 0) {
        if (i % 500 === 0) {
          write(A, i);
          write(B, i);
        }
        world.drain(A);
        world.drain(B);
        world.run(world.now + 3);
      }
    }
    expect(escaped.slice(0, 5)).toEqual([]);
    // Memory a peer can make us hold is bounded by the windows and quotas, not by what it sent.
    for (const ep of [A, B]) {
      for (const name of ['kv', 's']) {
        const r = ep.pair.register(name);
        expect(r.pendingCount).toBeLessThanOrEqual(64);
        expect(r.sequencer?.peerRejections.size ?? 0).toBeLessThanOrEqual(128);
        expect(r.state.fullTransferBytes()).toBeLessThanOrEqual(4 << 20);
      }
    }
    expect(process.memoryUsage().heapUsed - heap0).toBeLessThan(512 << 20);
    // Fragments (§3.7): the partial messages held stay within the reassembly quota, and the fuzz reached the layer.
    for (const ep of [A, B]) expect(ep.pair.fragments.reassemblyBytes).toBeLessThanOrEqual(ep.pair.fragments.reassemblyQuota);
    const drops = { ...A.pair.stats.drops, ...B.pair.stats.drops };
    expect(drops['malformed-payload']).toBeGreaterThan(10_000); // the fuzz reached the decoder...
    expect(Object.keys(drops).length).toBeGreaterThan(5); // ...and the semantic checks behind it
    expect(drops['fragment-duplicate']).toBeGreaterThan(100); // pieces of the same messages: reassembly ran
    expect(drops['fragment-conflict']).toBeGreaterThan(10); // colliding ids with other layouts or octets

    // The peer behaves again: both ends keep writing, and the pair commits and re-entangles.
    // (A status the fuzz sent in the sequencer's name may claim a version ahead of the real
    // one; the follower reaches ENTANGLED once the sequencer's writes pass it, §8.6.)
    for (let i = 0; i < 600 && !(A.pair.state === PairState.ENTANGLED && B.pair.state === PairState.ENTANGLED); i++) {
      world.at(world.now + 1, () => {
        write(A, 200_000 + i);
        write(B, 200_000 + i);
      });
      world.run(world.now + 10);
    }
    const aligned = (): boolean =>
      A.pair.state === PairState.ENTANGLED &&
      B.pair.state === PairState.ENTANGLED &&
      ['kv', 's'].every((n) => {
        const ra = A.pair.register(n);
        const rb = B.pair.register(n);
        return (
          ra.version === rb.version &&
          ra.hash.hi === rb.hash.hi &&
          ra.hash.lo === rb.hash.lo &&
          ra.pendingCount === 0 &&
          rb.pendingCount === 0
        );
      });
    const healed = world.run(world.now + 120_000, aligned);
    if (!healed) {
      for (const ep of [A, B]) {
        const rs = ['kv', 's'].map((n) => {
          const r = ep.pair.register(n);
          return { n, v: r.version, h: r.hash, pend: r.pendingCount, req: r.reconciling, pv: r.peerVersion, st: r.status() };
        });
        console.log(ep.name, ep.pair.state, JSON.stringify(rs));
      }
    }
    expect(healed).toBe(true);
    const mine = [write(A, 100_001), write(B, 100_002)];
    world.drain(A);
    world.drain(B);
    expect(
      world.run(
        world.now + 60_000,
        () => aligned() && outcomes.get(`A:${mine[0]}`) === 'committed' && outcomes.get(`B:${mine[1]}`) === 'committed',
      ),
    ).toBe(true);
  }, 60_000);
});
