/**
 * Review 39m-2 (hostile follower, log path §8.1 step 3): every follower Status walks the whole list
 * of the follower's unacknowledged rejections (Sequencer.onStatus, `for (const q of
 * peerRejections.keys()) if (q <= peerResolvedSeq) delete`), whether or not its `resolvedSeq`
 * moved, though the list is in seq order and nothing above `resolvedSeq` can go. A follower
 * proposes candidates that are rejected (a failing CAS), never acknowledges them (resolvedSeq 0:
 * the list is kept at its bound, 2 · maxPending), then sends datagrams of 60 identical Statuses:
 * each Status costs 2 · maxPending map steps (maxPending may be configured up to 1,000,000). An
 * honest follower sends one Status per register per datagram and acknowledges its outcomes.
 * Measured at maxPending 4096 (8,192 rejections held): see the console line.
 */
import { describe, expect, it } from 'vitest';
import { HalfPair } from '../core/pair/halfpair.js';
import { MsgType, encodeMessage, type Message } from '../wire/messages.js';
import { peerManifest, concatBytes, cas } from './helpers.js';

const MAX_PENDING = 4096;

function sequencer(rejecting: boolean) {
  const regs = [{ name: 'kv', kind: 'map' as const, maxPending: MAX_PENDING }];
  const a = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 5, registers: regs }, 0);
  let pn = 1;
  let now = 1;
  const feed = (ms: Message[]) => a.handlePayload(now, pn++, concatBytes(ms.map((m) => encodeMessage(m))));
  a.handlePayload(now, pn++, peerManifest(regs));
  const status = (): Message => ({
    type: MsgType.Status,
    register: 'kv',
    version: 0,
    hash: { hi: 0, lo: 0 },
    logBase: 0,
    resolvedSeq: 0,
    held: [],
  });
  feed([status()]);
  const n = 2 * MAX_PENDING;
  for (let seq = 1; seq <= n; seq += 20) {
    const candidates = [];
    for (let q = seq; q < seq + 20 && q <= n; q++)
      candidates.push({ origin: 2, seq: q, delta: rejecting ? cas('k', 99, 'v') : cas(`k${q}`, 0, 'v') });
    feed([{ type: MsgType.Propose, register: 'kv', base: seq, candidates }]);
    for (let i = 0; i < 3; i++) {
      if ((a.pollTimeout() ?? Infinity) <= now) a.handleTimeout(now);
      while (a.pollTransmit(now));
      now++;
    }
  }
  const payload = concatBytes(Array.from({ length: 60 }, () => encodeMessage(status())));
  const rejections = a.register('kv').peerRejections as Map<number, unknown>;
  // Count the steps of the walk over the rejections.
  let steps = 0;
  const keys = rejections.keys.bind(rejections);
  rejections.keys = function () {
    const it = keys();
    return {
      next() {
        steps++;
        return it.next();
      },
      [Symbol.iterator]() {
        return this;
      },
    } as MapIterator<number>;
  };
  const run = (datagrams: number): number => {
    const t = performance.now();
    for (let i = 0; i < datagrams; i++) {
      a.handlePayload(now, pn++, payload);
      while (a.pollTransmit(now));
    }
    return performance.now() - t;
  };
  return { a, run, steps: () => steps, rejections, bytes: payload.length };
}

describe('a follower Status costs what its acknowledgement releases', () => {
  it('60 Statuses that acknowledge nothing do not each walk the 8,192 rejections held', () => {
    const x = sequencer(true);
    const y = sequencer(false);
    expect(x.rejections.size).toBe(2 * MAX_PENDING);
    expect(y.rejections.size).toBe(0);
    x.run(50);
    y.run(50);
    const before = x.steps();
    const tx = x.run(500);
    const ty = y.run(500);
    const perStatus = (x.steps() - before) / (500 * 60);
    console.log(
      `datagram of ${x.bytes} octets (60 Statuses): ${((tx / 500) * 1000).toFixed(0)} µs with ${x.rejections.size} rejections held, ` +
        `${((ty / 500) * 1000).toFixed(0)} µs with none; ${perStatus.toFixed(0)} map steps per Status`,
    );
    // Nothing at or below resolvedSeq 0 is held: nothing to walk.
    expect(perStatus).toBeLessThan(16);
  });
});
