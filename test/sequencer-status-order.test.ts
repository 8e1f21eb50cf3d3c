/**
 * A follower Status below what the sequencer accepted, within the send window, is taken for a
 * reordered one and ignored (PROTOCOL.md §8.1 step 1), across a rekey too: the old session stays
 * open for its grace period. (A first fix of rev 1.25 took the first Status after a new session as
 * it came; its reviews found an older one reordered past a rekey then decohered the pair, the
 * sequencer's log compacted at the newer acknowledgement, or stalled its sending until the
 * follower's next keepalive. A follower that restarted behind what it announced is now served by
 * the retransmission timer instead: test/follower-reconcile.test.ts.)
 */
import { expect, it } from 'vitest';
import { HalfPair } from '../core/pair/halfpair.js';
import { PairState } from '../core/pair/lifecycle.js';
import type { RegisterSpec } from '../core/pair/types.js';
import { decodeFrame } from '../wire/header.js';
import { MsgType, decodeMessages } from '../wire/messages.js';
import { set } from './helpers.js';

const REGS: RegisterSpec[] = [{ name: 'kv', kind: 'map' }];

function statusVersion(d: Uint8Array): number | undefined {
  const f = decodeFrame(d, () => true);
  let v: number | undefined;
  for (const m of decodeMessages(f.payload).messages) if (m.type === MsgType.Status) v = m.version;
  return v;
}

it('an older Status reordered past a rekey does not decohere an entangled pair', () => {
  let now = 0;
  const a = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 7, registers: REGS }, 0);
  const b = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 7, registers: REGS }, 0);
  const toB = (): void => {
    for (let d = a.pollTransmit(now); d; d = a.pollTransmit(now)) b.handleDatagram(now, d);
  };
  /** B's datagrams, those carrying a Status kept aside by `keep`. */
  const fromB = (keep?: (d: Uint8Array, v: number) => boolean): void => {
    for (let d = b.pollTransmit(now); d; d = b.pollTransmit(now)) {
      const v = statusVersion(d);
      if (v !== undefined && keep?.(d, v)) continue;
      a.handleDatagram(now, d);
    }
  };
  const step = (keep?: (d: Uint8Array, v: number) => boolean): void => {
    for (const p of [a, b]) if ((p.pollTimeout() ?? Infinity) <= now) p.handleTimeout(now);
    toB();
    fromB(keep);
    toB();
    now++;
  };
  for (let i = 0; i < 5000 && !(a.state === PairState.ENTANGLED && b.state === PairState.ENTANGLED); i++) step();
  for (let i = 0; i < 3; i++) {
    a.propose(now, 'kv', set(`k${i}`, 'v'));
    for (let t = 0; t < 200; t++) step();
  }
  expect(a.register('kv').version).toBe(3);
  expect(b.register('kv').version).toBe(3);

  // B applies v4 and reports it; that datagram is delayed (reordered), the next one (v5) goes first.
  a.propose(now, 'kv', set('k3', 'v'));
  let late: Uint8Array | undefined;
  for (let t = 0; t < 200 && late === undefined; t++) step((d, v) => (v === 4 && late === undefined ? ((late = d), true) : false));
  expect(late).toBeDefined();
  a.propose(now, 'kv', set('k4', 'v'));
  for (let t = 0; t < 200; t++) step((_d, v) => v === 4); // any other copy of v4's Status is late too
  expect(b.register('kv').version).toBe(5);
  expect(a.state).toBe(PairState.ENTANGLED);

  // A rekey: both ends see `established` and reset their packet space; the delayed datagram,
  // sent on the old session, still opens there and reaches A now.
  a.resetPacketSpace();
  b.resetPacketSpace();
  const events: string[] = [];
  while (a.pollEvent());
  a.handleDatagram(now, late!);
  for (let e = a.pollEvent(); e; e = a.pollEvent()) if (e.type === 'lifecycle') events.push(e.cause);
  expect(events).toEqual([]);
  expect(a.state).toBe(PairState.ENTANGLED);
  // The next write reaches the follower at once (not at its next keepalive), and nothing is sent again.
  const resent = a.stats.retransmitTimeouts;
  a.propose(now, 'kv', set('k9', 'v'));
  const t0 = now;
  for (let t = 0; t < 5000 && b.register('kv').version < 6; t++) step();
  expect(now - t0).toBeLessThan(50);
  for (let t = 0; t < 2000; t++) step();
  expect([a.state, b.state, b.register('kv').version, a.stats.retransmitTimeouts - resent, a.stats.reentanglements]).toEqual([
    PairState.ENTANGLED,
    PairState.ENTANGLED,
    6,
    0,
    0,
  ]);
});
