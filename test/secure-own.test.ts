import { describe, expect, it } from 'vitest';
import { HalfPair, type RegisterSpec } from '../core/pair/halfpair.js';
import { PairState } from '../core/pair/lifecycle.js';
import type { SpookEvent } from '../core/pair/events.js';
import { SimWorld, type SimEndpoint } from '../testing/sim/world.js';
import { SimPairStore } from '../testing/sim/pair-store.js';
import { QUOTA_DEFAULTS } from '../core/register/quota.js';
import type { MapState } from '../core/register/map.js';
import { set } from './helpers.js';

/**
 * A sequencer's own candidate that cannot be collapsed yet (the ends' registers differ, §6.3) is
 * recorded when its proposer is told "pending" (HalfPair.secureOwn, §10.1): a restart proposes it
 * again and it is decided once, like a follower's. Before, only followers recorded candidates,
 * and a crash or a plain restart of the sequencer lost one it had reported pending.
 */
const REGS: RegisterSpec[] = [{ name: 'kv', kind: 'map' }];
const both = (a: SimEndpoint, b: SimEndpoint, s: PairState) => () => a.pair.state === s && b.pair.state === s;

function world(seed: number) {
  const w = new SimWorld(seed, { loss: 0, dup: 0, reorder: 0, minDelayMs: 1, maxDelayMs: 5 });
  const stores: [SimPairStore, SimPairStore] = [new SimPairStore(), new SimPairStore()];
  const boot = (i: 0 | 1): HalfPair => {
    const pair = new HalfPair({ pairId: 5, seed: 77, localId: i + 1, peerId: 2 - i, registers: REGS, writes: 'driver' }, w.now);
    for (const r of pair.registers.values()) stores[i].load(r);
    return pair;
  };
  const outcomes: { ep: string; ev: Extract<SpookEvent, { type: 'outcome' }> }[] = [];
  w.onEvent = (ep, ev) => {
    if (ev.type === 'outcome') outcomes.push({ ep: ep.name, ev });
  };
  const [a, b] = w.adopt(['A', 'B'], [boot(0), boot(1)], stores);
  return { w, a, b, boot, outcomes };
}

const value = (ep: SimEndpoint, key: string): string | undefined => {
  const v = (ep.pair.register('kv').state as MapState).get(new TextEncoder().encode(key));
  return v && new TextDecoder().decode(v.value);
};

describe('a sequencer own candidate reported pending survives a restart (secureOwn)', () => {
  it('held by a register mismatch, recorded, then the sequencer crashes: proposed again after its restart and committed once', () => {
    for (let seed = 1; seed <= 5; seed++) {
      const { w, a, b, boot, outcomes } = world(seed);
      expect(w.run(20_000, both(a, b, PairState.ENTANGLED))).toBe(true);
      expect(a.pair.register('kv').role).toBe('sequencer');

      // Proposed, then (same turn, before any collapse) a reload changes a quota: nothing is decided meanwhile.
      let seq = 0;
      w.step(a, (pair) => {
        seq = pair.propose(w.now, 'kv', set('held', 'v1')).seq;
        pair.setQuota(w.now, 'kv', { ...QUOTA_DEFAULTS, maxKeys: 3 });
      });
      w.run(w.now + 3_000, () => false);
      expect(a.pair.registerMismatch).toBeDefined();
      expect(a.pair.register('kv').pendingCount).toBe(1);
      expect(outcomes).toEqual([]);

      // The proposer's timeout: record it once; a second report records nothing more.
      let first = false;
      let again = true;
      w.step(a, (pair) => {
        first = pair.secureOwn(w.now, 'kv', seq);
        again = pair.secureOwn(w.now, 'kv', seq);
      });
      expect([first, again]).toEqual([true, false]);

      // The sequencer stops (its store keeps what was recorded) and comes back with its
      // configured quota, which the follower's matches again.
      // (A plain stop is no better: DiskStore writes no own candidates at close.)
      w.crash(a);
      const back = boot(0);
      expect(back.register('kv').pendingCount).toBe(1);
      w.restart(a, back);
      expect(
        w.run(w.now + 30_000, () => both(a, b, PairState.ENTANGLED)() && value(b, 'held') === 'v1'),
        `seed ${seed}`,
      ).toBe(true);
      w.run(w.now + 2_000, () => false);
      expect(value(a, 'held')).toBe('v1');
      const decided = outcomes.filter((o) => o.ev.register === 'kv' && o.ev.seq === seq);
      expect(decided.map((o) => [o.ep, o.ev.verdict])).toEqual([['A', 'committed']]);
      // Decided: nothing left to record.
      let late = true;
      w.step(a, (pair) => (late = pair.secureOwn(w.now, 'kv', seq)));
      expect(late).toBe(false);
    }
  });

  it('a follower records its candidates when proposed: secureOwn writes nothing more', () => {
    const { w, a, b } = world(9);
    expect(w.run(20_000, both(a, b, PairState.ENTANGLED))).toBe(true);
    let wrote = true;
    w.step(b, (pair) => {
      const { seq } = pair.propose(w.now, 'kv', set('f', 'x'));
      wrote = pair.secureOwn(w.now, 'kv', seq);
    });
    expect(wrote).toBe(false);
    // Unknown register or sequence number: nothing to record, nothing thrown.
    w.step(a, (pair) => {
      expect(pair.secureOwn(w.now, 'nope', 1)).toBe(false);
      expect(pair.secureOwn(w.now, 'kv', 12345)).toBe(false);
    });
  });
});
