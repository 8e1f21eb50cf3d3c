/**
 * A register's quota lowered at run time (a reload, HalfPair.setQuota) while a collapse decided
 * under the old, agreed quota is still on its way to the follower: nothing that was committed
 * may be lost or stall the pair (PROTOCOL §6.3 rule 4, §7.8).
 */
import { describe, expect, it } from 'vitest';
import { HalfPair } from '../core/pair/halfpair.js';
import { PairState } from '../core/pair/lifecycle.js';
import type { MapState } from '../core/register/map.js';
import { QUOTA_DEFAULTS } from '../core/register/quota.js';
import type { SpookEvent } from '../core/pair/events.js';
import { SimWorld } from '../testing/sim/world.js';
import { set } from './helpers.js';

describe('a quota lowered at run time, a record of the old quota in flight', () => {
  it('the follower lowers first: the record the sequencer committed under the old quota still applies; the pair re-entangles, both ends equal', () => {
    for (let seed = 1; seed <= 5; seed++) {
      const w = new SimWorld(seed, { loss: 0, dup: 0, reorder: 0, minDelayMs: 5, maxDelayMs: 10 });
      const outcomes: { ep: string; ev: SpookEvent }[] = [];
      w.onEvent = (ep, ev) => void (ev.type === 'outcome' && outcomes.push({ ep: ep.name, ev }));
      const old = { ...QUOTA_DEFAULTS, maxKeys: 3 };
      const low = { ...QUOTA_DEFAULTS, maxKeys: 2 };
      const regs = [{ name: 'kv', kind: 'map' as const, quota: old }];
      const [a, b] = w.adopt(
        ['A', 'B'],
        [
          new HalfPair({ pairId: 3, seed: 9, localId: 1, peerId: 2, registers: regs }, 0),
          new HalfPair({ pairId: 3, seed: 9, localId: 2, peerId: 1, registers: regs }, 0),
        ],
      );
      const entangled = () => a.pair.state === PairState.ENTANGLED && b.pair.state === PairState.ENTANGLED;
      expect(w.run(10_000, entangled)).toBe(true);
      for (const k of ['k1', 'k2']) {
        w.step(b, (p) => void p.propose(w.now, 'kv', set(k, 'v')));
        w.drain(b);
        expect(w.run(w.now + 5000, () => entangled() && b.pair.register('kv').state.size() === 2 - (k === 'k1' ? 1 : 0))).toBe(true);
      }
      // B's third key reaches A, which commits it (3 keys: within the quota both agree on)...
      const v = a.pair.register('kv').version;
      w.step(b, (p) => void p.propose(w.now, 'kv', set('k3', 'v')));
      w.drain(b);
      expect(w.run(w.now + 5000, () => a.pair.register('kv').version === v + 1, 0)).toBe(true);
      expect(b.pair.register('kv').version).toBe(v);
      // ...and B is reloaded with the lower quota before that record reaches it; then A.
      w.step(b, (p) => p.setQuota(w.now, 'kv', low));
      w.drain(b);
      w.run(w.now + 2000);
      w.step(a, (p) => p.setQuota(w.now, 'kv', low));
      w.drain(a);
      expect(w.run(w.now + 30_000, entangled), `seed ${seed}: re-entangled`).toBe(true);
      const keys = (p: HalfPair) => (p.register('kv').state as MapState).size();
      expect([keys(a.pair), keys(b.pair)], `seed ${seed}`).toEqual([3, 3]);
      expect(b.pair.register('kv').version).toBe(a.pair.register('kv').version);
      // B's write was committed by the sequencer: B is told so (not left pending).
      expect(outcomes.filter((o) => o.ep === 'B' && o.ev.type === 'outcome' && o.ev.verdict === 'committed')).toHaveLength(3);
      expect(b.pair.register('kv').pendingCount).toBe(0);
      expect(b.pair.stats.drops['quota-violation'] ?? 0).toBe(0);
      // Growth past the new quota is refused (by the sequencer, under the quota both ends now agree on).
      w.step(b, (p) => void p.propose(w.now, 'kv', set('k4', 'v')));
      w.drain(b);
      expect(w.run(w.now + 5000, () => outcomes.filter((o) => o.ep === 'B').length === 4)).toBe(true);
      const last = outcomes.filter((o) => o.ep === 'B')[3].ev;
      expect(last.type === 'outcome' && [last.verdict, last.verdict === 'rejected' && last.reason]).toEqual(['rejected', 'quota-exceeded']);
    }
  });

  it('a sequencer decides nothing while it knows the quotas differ: a write queued as its quota changes waits for the quota both ends agree on', () => {
    for (let seed = 1; seed <= 5; seed++) {
      const w = new SimWorld(seed, { loss: 0, dup: 0, reorder: 0, minDelayMs: 1, maxDelayMs: 5 });
      const outcomes: SpookEvent[] = [];
      w.onEvent = (ep, ev) => void (ev.type === 'outcome' && ep.name === 'A' && outcomes.push(ev));
      const two = { ...QUOTA_DEFAULTS, maxKeys: 2 };
      const regs = [{ name: 'kv', kind: 'map' as const, quota: two }];
      const [a, b] = w.adopt(
        ['A', 'B'],
        [
          new HalfPair({ pairId: 3, seed: 9, localId: 1, peerId: 2, registers: regs }, 0),
          new HalfPair({ pairId: 3, seed: 9, localId: 2, peerId: 1, registers: regs }, 0),
        ],
      );
      const entangled = () => a.pair.state === PairState.ENTANGLED && b.pair.state === PairState.ENTANGLED;
      expect(w.run(10_000, entangled)).toBe(true);
      for (const k of ['k1', 'k2']) w.step(a, (p) => void p.propose(w.now, 'kv', set(k, 'v')));
      w.drain(a);
      expect(w.run(w.now + 5000, () => entangled() && b.pair.register('kv').state.size() === 2)).toBe(true);
      // A third key written as A's quota is raised (the same turn): B still has 2, the pair decoheres.
      w.step(a, (p) => {
        p.propose(w.now, 'kv', set('k3', 'v'));
        p.setQuota(w.now, 'kv', { ...two, maxKeys: 3 });
      });
      w.drain(a);
      expect(a.pair.state).toBe(PairState.DECOHERENT);
      w.run(w.now + 1000);
      // The operator takes the change back: both ends agree on 2 again, the write is decided by it.
      w.step(a, (p) => p.setQuota(w.now, 'kv', two));
      w.drain(a);
      expect(
        w.run(w.now + 30_000, () => entangled() && outcomes.length === 3),
        `seed ${seed}`,
      ).toBe(true);
      const last = outcomes[2];
      expect(last.type === 'outcome' && [last.verdict, last.verdict === 'rejected' && last.reason]).toEqual(['rejected', 'quota-exceeded']);
      const keys = (p: HalfPair) => (p.register('kv').state as MapState).size();
      expect([keys(a.pair), keys(b.pair)]).toEqual([2, 2]);
      expect(b.pair.stats.drops['quota-violation'] ?? 0).toBe(0);
    }
  });

  it("a quota changed after a new session began is compared with the peer's manifest of that session, never the last one's", () => {
    const w = new SimWorld(4, { loss: 0, dup: 0, reorder: 0, minDelayMs: 1, maxDelayMs: 5 });
    const q = (maxKeys: number) => ({ ...QUOTA_DEFAULTS, maxKeys });
    const [a, b] = w.adopt(
      ['A', 'B'],
      [
        new HalfPair({ pairId: 3, seed: 9, localId: 1, peerId: 2, registers: [{ name: 'kv', kind: 'map', quota: q(3) }] }, 0),
        new HalfPair({ pairId: 3, seed: 9, localId: 2, peerId: 1, registers: [{ name: 'kv', kind: 'map', quota: q(5) }] }, 0),
      ],
    );
    expect(w.run(10_000, () => a.pair.state === PairState.DECOHERENT && b.pair.state === PairState.DECOHERENT)).toBe(true);
    // B restarts (with who knows what configuration): a new session; its manifest has not arrived when A is reloaded to B's old limit.
    a.pair.resetPacketSpace();
    a.pair.setQuota(w.now, 'kv', q(5));
    expect(a.pair.peerManifestState).toBe('none');
    expect(a.pair.state).toBe(PairState.DECOHERENT);
  });
});
