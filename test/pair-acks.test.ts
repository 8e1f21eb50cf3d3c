import { describe, expect, it } from 'vitest';
import { MsgType, decodeMessages } from '../wire/messages.js';
import { decodeFrame } from '../wire/header.js';
import { HalfPair } from '../core/pair/halfpair.js';
import { PairState } from '../core/pair/lifecycle.js';
import { STATUS_EVERY_VERSIONS } from '../core/pair/shared.js';
import { DeltaOp } from '../wire/delta.js';
import { enc, set } from './helpers.js';

// Acknowledgements ride datagrams that go anyway (PROTOCOL.md §9.1, rev 1.13 "delayed Status").
const TIMING = { keepaliveMs: 1000, silenceMs: 5000, maxAckDelayMs: 10, initialRtoMs: 250 };

function pair(localId: number, peerId: number, timing = TIMING): HalfPair {
  return new HalfPair({ pairId: 9, localId, peerId, seed: 7, registers: [{ name: 'kv', kind: 'map' }], timing }, 0);
}

/** Run the driver's loop for both ends over a zero-delay link from `from` to `to` ms; every datagram sent, with its time and messages. */
function run(
  a: HalfPair,
  b: HalfPair,
  from: number,
  to: number,
  actions: Record<number, () => void> = {},
): { at: number; by: 'a' | 'b'; msgs: string[] }[] {
  const log: { at: number; by: 'a' | 'b'; msgs: string[] }[] = [];
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
          log.push({ at: now, by, msgs: decodeMessages(decodeFrame(d).payload).messages.map((m) => MsgType[m.type]) });
          q.handleDatagram(now, d);
          moved = true;
        }
      }
    }
  }
  return log;
}

/** A settled pair at t = 2000, its keepalives just sent. */
function settled(): [HalfPair, HalfPair] {
  const a = pair(1, 2); // sequencer
  const b = pair(2, 1); // follower
  run(a, b, 0, 2000);
  expect([a.state, b.state]).toEqual([PairState.ENTANGLED, PairState.ENTANGLED]);
  return [a, b];
}

describe('delayed acknowledgement (Status rides the next datagram)', () => {
  it("a sequencer's write costs two datagrams: the collapse, then the follower's Ack and Status at maxAckDelayMs, unanswered", () => {
    const [a, b] = settled();
    a.propose(2100, 'kv', set('x', '1'));
    const log = run(a, b, 2100, 2200);
    expect(log).toEqual([
      { at: 2100, by: 'a', msgs: ['Collapse'] },
      { at: 2110, by: 'b', msgs: ['Ack', 'Status'] },
    ]);
    expect(a.state).toBe(PairState.ENTANGLED); // the Status settled it
    expect(a.rto()).toBeGreaterThanOrEqual(TIMING.maxAckDelayMs); // RFC 9002 §5.3: the RTO leaves room for the ack delay
  });

  it("the sequencer's RTO leaves room for the ack delay: sparse writes are never resent, even with a 1 ms RTO floor", () => {
    const fast = { ...TIMING, minRtoMs: 1 };
    const a = pair(1, 2, fast);
    const b = pair(2, 1, fast);
    run(a, b, 0, 2000);
    const actions: Record<number, () => void> = {};
    for (let i = 0; i < 20; i++) actions[2100 + 50 * i] = () => void a.propose(2100 + 50 * i, 'kv', set(`k${i}`, 'v'));
    const log = run(a, b, 2100, 3200, actions);
    expect(a.rttMs).toBe(0); // a zero-delay link: without the ack delay in it, the RTO would be 1 ms
    expect(a.stats.retransmitTimeouts).toBe(0);
    expect(log.filter((d) => d.by === 'a' && d.msgs.includes('Collapse'))).toHaveLength(20);
    expect(b.register('kv').version).toBe(a.register('kv').version);
  });

  it('the Status owed rides a proposal made within maxAckDelayMs', () => {
    const [a, b] = settled();
    a.propose(2100, 'kv', set('x', '1'));
    const log = run(a, b, 2100, 2200, { 2103: () => void b.propose(2103, 'kv', set('y', '2')) });
    expect(log.slice(0, 3)).toEqual([
      { at: 2100, by: 'a', msgs: ['Collapse'] },
      { at: 2103, by: 'b', msgs: ['Ack', 'Propose', 'Status'] },
      { at: 2103, by: 'a', msgs: ['Ack', 'Collapse'] },
    ]);
    expect(log).toHaveLength(4); // and the follower's acknowledgement of that collapse, at its deadline
    expect(log[3]).toEqual({ at: 2113, by: 'b', msgs: ['Ack', 'Status'] });
  });

  it(`${STATUS_EVERY_VERSIONS} versions applied without a Status make it go at once (a burst keeps the send window open)`, () => {
    const [a, b] = settled();
    const log: ReturnType<typeof run> = [];
    for (let i = 0; i < STATUS_EVERY_VERSIONS; i++) {
      a.propose(2100, 'kv', set(`k${i}`, 'v'));
      a.collapse(2100); // one version each
    }
    log.push(...run(a, b, 2100, 2100));
    const statuses = log.filter((d) => d.by === 'b' && d.msgs.includes('Status'));
    expect(statuses.map((d) => d.at)).toEqual([2100]);
    expect(b.register('kv').version).toBe(a.register('kv').version);
  });

  it("a follower's retransmission timer finding every candidate decided resends nothing and does not back off", () => {
    const [a, b] = settled();
    b.propose(2100, 'kv', set('x', '1'));
    const before = b.stats.retransmitTimeouts;
    const log = run(a, b, 2100, 2900);
    expect(b.stats.retransmitTimeouts).toBe(before);
    expect(log.filter((d) => d.by === 'b' && d.msgs.includes('Propose'))).toHaveLength(1);
  });
});

// From the hostile review of the delayed Status: an owed Status MUST leave by the Ack deadline of the
// frame that brought the record; the sequencer's RTO leaves room for maxAckDelayMs only.
describe('an owed Status that does not fit the datagram leaving', () => {
  it('still leaves by the Ack deadline of the collapse it acknowledges (not a full maxAckDelayMs later), and nothing is resent', () => {
    // Find a proposal size whose datagram (Ack + Propose) leaves no room for the Status.
    let found = false;
    for (let size = 900; size <= 1400 && !found; size += 4) {
      const a = pair(1, 2, { ...TIMING, minRtoMs: 1 }); // sequencer
      const b = pair(2, 1, { ...TIMING, minRtoMs: 1 }); // follower
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
