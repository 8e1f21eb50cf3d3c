import { describe, expect, it } from 'vitest';
import { MsgType, decodeMessages, type ProposeMsg } from '../wire/messages.js';
import { decodeFrame } from '../wire/header.js';
import { HalfPair } from '../core/pair/halfpair.js';
import { PairState } from '../core/pair/lifecycle.js';
import { PROPOSE_WINDOW } from '../core/pair/shared.js';
import type { MapState } from '../core/register/map.js';
import { set } from './helpers.js';

// The follower's proposal window (PROTOCOL.md §7.5): at most PROPOSE_WINDOW Propose datagrams in
// flight, each until its last candidate has its outcome. Found by `bench scale` (issue 16): a
// proposer with 65,536 pending sent ~2,400 datagrams at once and overflowed the hub's socket.
const TIMING = { keepaliveMs: 1000, silenceMs: 5000, maxAckDelayMs: 10, initialRtoMs: 250 };
const PENDING = 2048;
const VALUE = 'v'.repeat(400); // ~3 candidates a datagram: PENDING of them need ~680 datagrams

function pair(localId: number, peerId: number): HalfPair {
  return new HalfPair(
    { pairId: 9, localId, peerId, seed: 7, registers: [{ name: 'kv', kind: 'map', maxPending: PENDING }], timing: TIMING },
    0,
  );
}

/** The own seqs a datagram proposes (none: not a Propose). */
function proposed(d: Uint8Array): number[] {
  const msgs = decodeMessages(decodeFrame(d).payload).messages;
  return msgs.filter((m): m is ProposeMsg => m.type === MsgType.Propose).flatMap((m) => m.candidates.map((c) => c.seq));
}

/** Both ends' loop over a zero-delay link, `from` to `to` ms; `drop` decides which of the follower's datagrams are lost. */
function run(a: HalfPair, b: HalfPair, from: number, to: number, drop: (d: Uint8Array) => boolean = () => false): Uint8Array[] {
  const sentByB: Uint8Array[] = [];
  for (let now = from; now <= to; now++)
    for (let moved = true, turns = 0; moved && turns < 100_000; turns++) {
      moved = false;
      for (const [p, q] of [
        [a, b],
        [b, a],
      ] as const) {
        if ((p.pollTimeout() ?? Infinity) <= now) p.handleTimeout(now);
        for (let d = p.pollTransmit(now); d !== undefined; d = p.pollTransmit(now)) {
          if (p === b) sentByB.push(d);
          if (!(p === b && drop(d))) q.handleDatagram(now, d);
          moved = true;
        }
      }
    }
  return sentByB;
}

function settled(): [HalfPair, HalfPair] {
  const a = pair(1, 2); // sequencer
  const b = pair(2, 1); // follower
  run(a, b, 0, 2000);
  expect([a.state, b.state]).toEqual([PairState.ENTANGLED, PairState.ENTANGLED]);
  expect(b.role).toBe('follower');
  return [a, b];
}

describe("the follower's proposal window", () => {
  it(`a follower with ${PENDING} pending sends ${PROPOSE_WINDOW} Propose datagrams, then more only as outcomes come back; all commit`, () => {
    const [a, b] = settled();
    for (let i = 0; i < PENDING; i++) b.propose(2100, 'kv', set(`k${i}`, VALUE));
    // Nothing delivered: the follower stops at the window.
    const first: Uint8Array[] = [];
    for (let d = b.pollTransmit(2100); d !== undefined && first.length < 10_000; d = b.pollTransmit(2100)) first.push(d);
    const proposes = first.filter((d) => proposed(d).length > 0);
    expect(proposes).toHaveLength(PROPOSE_WINDOW);
    const lastSent = Math.max(...proposes.flatMap(proposed));
    expect(lastSent).toBeLessThan(PENDING); // the window, not the pending count, stopped it
    // Delivered: the outcomes open the window and the rest follow, each candidate proposed once.
    for (const d of first) a.handleDatagram(2100, d);
    const rest = run(a, b, 2100, 2200);
    const seqs = [...proposes, ...rest].flatMap(proposed);
    expect(new Set(seqs).size).toBe(PENDING);
    expect(seqs).toHaveLength(PENDING);
    expect(b.register('kv').pendingCount).toBe(0);
    expect((a.register('kv').state as MapState).size()).toBe(PENDING);
    expect(b.register('kv').version).toBe(a.register('kv').version);
  });

  it('a retransmission timeout resends one window of the undecided candidates, not all of them', () => {
    const [a, b] = settled();
    for (let i = 0; i < PENDING; i++) b.propose(2100, 'kv', set(`k${i}`, VALUE));
    // Every Propose of the first window is lost: the follower hears nothing back about them.
    const lost = run(a, b, 2100, 2100, (d) => proposed(d).length > 0).filter((d) => proposed(d).length > 0);
    expect(lost).toHaveLength(PROPOSE_WINDOW);
    const timeouts = b.stats.retransmitTimeouts;
    // Up to the first timeout, still losing everything: one window again, from the first candidate.
    const again: Uint8Array[] = [];
    let now = 2101;
    for (; b.stats.retransmitTimeouts === timeouts && now < 2100 + 10 * TIMING.initialRtoMs; now++)
      again.push(...run(a, b, now, now, () => true).filter((d) => proposed(d).length > 0));
    expect(b.stats.retransmitTimeouts).toBe(timeouts + 1);
    expect(again).toHaveLength(PROPOSE_WINDOW);
    expect(Math.min(...again.flatMap(proposed))).toBe(Math.min(...lost.flatMap(proposed)));
    // The link heals: everything commits.
    run(a, b, now, now + 4000);
    expect(b.register('kv').pendingCount).toBe(0);
    expect((a.register('kv').state as MapState).size()).toBe(PENDING);
  });

  /** One way of the link in the two tests below: a backlog then takes several round trips to drain, longer than one RTO. */
  const LINK_MS = 15;

  /**
   * Both ends over that link from `from` until `done` (at most 20 s); `drop` loses follower datagrams,
   * `each` runs every ms. The follower's datagrams, when sent.
   */
  function delayed(
    a: HalfPair,
    b: HalfPair,
    from: number,
    done: () => boolean,
    drop: (d: Uint8Array) => boolean = () => false,
    each: (now: number) => void = () => undefined,
  ) {
    const queue: { at: number; to: HalfPair; d: Uint8Array }[] = [];
    const sentByB: { at: number; d: Uint8Array }[] = [];
    for (let now = from; now <= from + 20_000 && !done(); now++) {
      each(now);
      for (const p of [a, b]) {
        if ((p.pollTimeout() ?? Infinity) <= now) p.handleTimeout(now);
        for (let d = p.pollTransmit(now); d !== undefined; d = p.pollTransmit(now)) {
          if (p === b) sentByB.push({ at: now, d });
          if (!(p === b && drop(d))) queue.push({ at: now + LINK_MS, to: p === a ? b : a, d });
        }
      }
      const due = queue.filter((q) => q.at <= now);
      queue.splice(0, due.length); // pushed in time order: the due ones lead
      for (const q of due) q.to.handleDatagram(now, q.d);
    }
    return sentByB;
  }

  /** A settled pair whose RTT estimate has learnt the link (a few writes, their outcomes the samples); then PENDING candidates at 3000. */
  function loaded(): [HalfPair, HalfPair] {
    const [a, b] = settled();
    for (let i = 0; i < 20; i++) b.propose(2100, 'kv', set(`warm${i}`, 'x'));
    delayed(a, b, 2100, () => b.register('kv').pendingCount === 0);
    expect(b.register('kv').pendingCount).toBe(0);
    for (let i = 0; i < PENDING; i++) b.propose(3000, 'kv', set(`k${i}`, VALUE));
    return [a, b];
  }

  it('while outcomes keep coming the retransmission timer waits (rev 1.19): nothing the sequencer is deciding is resent', () => {
    const [a, b] = loaded();
    const timeouts = b.stats.retransmitTimeouts;
    // ~680 Propose datagrams in windows of 256: several round trips, longer in all than one RTO.
    const sent = delayed(a, b, 3000, () => b.register('kv').pendingCount === 0);
    expect(b.register('kv').pendingCount).toBe(0);
    expect(b.stats.retransmitTimeouts).toBe(timeouts);
    expect(sent.flatMap((x) => proposed(x.d))).toHaveLength(PENDING); // each candidate proposed once
  });

  it('a lost Propose amid that progress is resent one RTO after it was sent, not once the outcomes before it are all in', () => {
    const [a, b] = loaded();
    const timeouts = b.stats.retransmitTimeouts;
    let lost: number[] = [];
    const drop = (d: Uint8Array): boolean => {
      const seqs = proposed(d);
      if (lost.length > 0 || !seqs.some((q) => q > 20 + PENDING / 2)) return false;
      lost = seqs; // one Propose, late in the backlog
      return true;
    };
    const rtoAt = new Map<number, number>();
    const sent = delayed(
      a,
      b,
      3000,
      () => b.register('kv').pendingCount === 0,
      drop,
      (now) => rtoAt.set(now, b.rto()),
    );
    expect(lost.length).toBeGreaterThan(0);
    expect(b.register('kv').pendingCount).toBe(0);
    expect((a.register('kv').state as MapState).size()).toBe(20 + PENDING);
    // One timeout, one RTO after the lost Propose was sent: what came before it was proposed once.
    expect(b.stats.retransmitTimeouts).toBe(timeouts + 1);
    const before = sent.flatMap((x) => proposed(x.d)).filter((q) => q < lost[0]);
    expect(before).toHaveLength(new Set(before).size);
    // Resent one RTO after it was sent (a per-Propose time threshold), not once the outcomes before it are all in.
    const [first, again] = sent.filter((x) => proposed(x.d).includes(lost[0])).map((x) => x.at);
    // (The RTO grows under the burst: the threshold is the largest it was from that send to the resend, backoff 1.)
    const rto = Math.max(...[...rtoAt].filter(([t]) => t >= first && t < again).map(([, r]) => r));
    expect(again - first).toBeGreaterThanOrEqual(Math.min(...[...rtoAt].filter(([t]) => t >= first && t < again).map(([, r]) => r)));
    expect(again - first).toBeLessThanOrEqual(rto + 2);
  });
});
