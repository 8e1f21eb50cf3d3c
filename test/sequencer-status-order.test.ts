/**
 * A follower Status below what the sequencer accepted, within the send window, is taken for a
 * reordered one and ignored (PROTOCOL.md §8.1 step 1), across a rekey too: the old session stays
 * open for its grace period. (A first fix of rev 1.25 took the first Status after a new session as
 * it came; its reviews found an older one reordered past a rekey then decohered the pair, the
 * sequencer's log compacted at the newer acknowledgement, or stalled its sending until the
 * follower's next keepalive. A follower that restarted behind what it announced is now served by
 * the retransmission timer instead, which never goes back below the log's base: the next review
 * found it stalled an idle pair there the same way; test/follower-reconcile.test.ts.)
 */
import { describe, expect, it } from 'vitest';
import { HalfPair } from '../core/pair/halfpair.js';
import { PairState } from '../core/pair/lifecycle.js';
import type { RegisterSpec } from '../core/pair/types.js';
import { entangleWithSets, set, statusVersion } from './helpers.js';

const REGS: RegisterSpec[] = [{ name: 'kv', kind: 'map' }];

/**
 * Sequencer A and follower B in memory, entangled at v5, with B's Status acknowledging v4 kept
 * aside (`late`: reordered behind the one acknowledging v5). `step` delivers each end's datagrams.
 */
function reordered() {
  const t = { now: 0 };
  const a = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 7, registers: REGS }, 0);
  const b = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 7, registers: REGS }, 0);
  const toB = (): void => {
    for (let d = a.pollTransmit(t.now); d; d = a.pollTransmit(t.now)) b.handleDatagram(t.now, d);
  };
  /** B's datagrams, those carrying a Status kept aside by `keep`. */
  const fromB = (keep?: (d: Uint8Array, v: number) => boolean): void => {
    for (let d = b.pollTransmit(t.now); d; d = b.pollTransmit(t.now)) {
      const v = statusVersion(d);
      if (v !== undefined && keep?.(d, v)) continue;
      a.handleDatagram(t.now, d);
    }
  };
  const step = (keep?: (d: Uint8Array, v: number) => boolean): void => {
    for (const p of [a, b]) if ((p.pollTimeout() ?? Infinity) <= t.now) p.handleTimeout(t.now);
    toB();
    fromB(keep);
    toB();
    t.now++;
  };
  entangleWithSets(
    a,
    b,
    () => step(),
    () => t.now,
  );
  // B applies v4 and reports it; that datagram is delayed (reordered), the next one (v5) goes first.
  a.propose(t.now, 'kv', set('k3', 'v'));
  let late: Uint8Array | undefined;
  for (let n = 0; n < 200 && late === undefined; n++) step((d, v) => (v === 4 && late === undefined ? ((late = d), true) : false));
  expect(late).toBeDefined();
  a.propose(t.now, 'kv', set('k4', 'v'));
  for (let n = 0; n < 200; n++) step((_d, v) => v === 4); // any other copy of v4's Status is late too
  expect([a.register('kv').version, b.register('kv').version, a.register('kv').peerVersion, a.state]).toEqual([
    5,
    5,
    5,
    PairState.ENTANGLED,
  ]);
  return { t, a, b, step, late: late! };
}

describe('an older follower Status, reordered', () => {
  it('past a rekey, does not decohere an entangled pair, nor delay the next write', () => {
    const { t, a, b, step, late } = reordered();
    // A rekey: both ends see `established` and reset their packet space; the delayed datagram,
    // sent on the old session, still opens there and reaches A now.
    a.resetPacketSpace();
    b.resetPacketSpace();
    const events: string[] = [];
    while (a.pollEvent());
    a.handleDatagram(t.now, late);
    for (let e = a.pollEvent(); e; e = a.pollEvent()) if (e.type === 'lifecycle') events.push(e.cause);
    expect(events).toEqual([]);
    expect(a.state).toBe(PairState.ENTANGLED);
    // The next write reaches the follower at once (not at its next keepalive).
    a.propose(t.now, 'kv', set('k9', 'v'));
    const t0 = t.now;
    for (let n = 0; n < 5000 && b.register('kv').version < 6; n++) step();
    expect(t.now - t0).toBeLessThan(50);
    for (let n = 0; n < 2000; n++) step();
    expect([a.state, b.state, b.register('kv').version, a.stats.reentanglements]).toEqual([PairState.ENTANGLED, PairState.ENTANGLED, 6, 0]);
  });

  it('on an idle pair, does not delay the next write past its retransmission timeout: the go-back stays within the log', () => {
    const { t, a, b, step, late } = reordered();
    a.handleDatagram(t.now, late);
    for (let n = 0; n < 100; n++) step(); // longer than an RTO here, shorter than B's keepalive
    a.propose(t.now, 'kv', set('k9', 'v'));
    const t0 = t.now;
    for (let n = 0; n < 5000 && b.register('kv').version < 6; n++) step();
    expect(b.register('kv').version).toBe(6);
    expect(t.now - t0).toBeLessThan(50);
  });
});
