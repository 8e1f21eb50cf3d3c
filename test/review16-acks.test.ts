/**
 * Review of issue 16's delayed Status (PROTOCOL.md §9.1 "Owed Status", rev 1.13): an owed
 * Status MUST leave no later than the Ack deadline of the frame that brought the record; the
 * sequencer's RTO leaves room for maxAckDelayMs only.
 */
import { describe, expect, it } from 'vitest';
import { MsgType, decodeMessages } from '../wire/messages.js';
import { decodeFrame } from '../wire/header.js';
import { HalfPair } from '../core/pair/halfpair.js';
import { PairState } from '../core/pair/lifecycle.js';
import { DeltaOp } from '../wire/delta.js';
import { enc, set } from './helpers.js';

const TIMING = { keepaliveMs: 1000, silenceMs: 5000, maxAckDelayMs: 10, initialRtoMs: 250, minRtoMs: 1 };

function pair(localId: number, peerId: number): HalfPair {
  return new HalfPair({ pairId: 9, localId, peerId, seed: 7, registers: [{ name: 'kv', kind: 'map' }], timing: TIMING }, 0);
}

type Sent = { at: number; by: 'a' | 'b'; msgs: string[]; bytes: number };

/** The driver's loop for both ends over a zero-delay link, 1 ms steps. */
function run(a: HalfPair, b: HalfPair, from: number, to: number, actions: Record<number, () => void> = {}): Sent[] {
  const log: Sent[] = [];
  for (let now = from; now <= to; now++) {
    actions[now]?.();
    for (let moved = true; moved;) {
      moved = false;
      for (const [p, q, by] of [
        [a, b, 'a'],
        [b, a, 'b'],
      ] as const) {
        if ((p.pollTimeout() ?? Infinity) <= now) p.handleTimeout(now);
        for (let d = p.pollTransmit(now); d !== undefined; d = p.pollTransmit(now)) {
          log.push({ at: now, by, bytes: d.length, msgs: decodeMessages(decodeFrame(d).payload).messages.map((m) => MsgType[m.type]) });
          q.handleDatagram(now, d);
          moved = true;
        }
      }
    }
  }
  return log;
}

describe('an owed Status that does not fit the datagram leaving', () => {
  it('still leaves by the Ack deadline of the collapse it acknowledges (not a full maxAckDelayMs later), and nothing is resent', () => {
    // Find a proposal size whose datagram (Ack + Propose) leaves no room for the Status.
    let found = false;
    for (let size = 900; size <= 1400 && !found; size += 4) {
      const a = pair(1, 2); // sequencer
      const b = pair(2, 1); // follower
      run(a, b, 0, 2000);
      expect([a.state, b.state]).toEqual([PairState.ENTANGLED, PairState.ENTANGLED]);
      const value = new Uint8Array(size).fill(7);
      const log = run(a, b, 2100, 2400, {
        2100: () => void a.propose(2100, 'kv', set('x', '1')),
        2105: () => void b.propose(2105, 'kv', { op: DeltaOp.Set, key: enc('big'), value }),
      });
      const at2105 = log.find((d) => d.by === 'b' && d.at === 2105);
      if (!at2105 || at2105.msgs.includes('Status') || !at2105.msgs.includes('Propose') || at2105.msgs.length !== 2) continue;
      found = true;
      // The collapse of x left at 2100: its Ack deadline is 2110. The Status acknowledging it must leave by then.
      const status = log.find((d) => d.by === 'b' && d.msgs.includes('Status'))!;
      expect(status.at).toBeLessThanOrEqual(2110);
      expect(a.stats.retransmitTimeouts).toBe(0);
      expect(b.register('kv').version).toBe(a.register('kv').version);
    }
    expect(found).toBe(true);
  });
});
