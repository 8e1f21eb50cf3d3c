/**
 * At a rekey (PROTOCOL.md §12.6) the initiator switches first and forgets its packet space (§9.1);
 * the responder keeps sending on the old session until the initiator's first frame on the new one
 * arrives. A frame of the old session that reaches the initiator after its switch (in flight, or
 * sent meanwhile) is an honest one: its packet number, from the old session's space, became the
 * largest received, and every Ack named it from then on, a number the responder, which restarted
 * at 0 on the new session, never sent. So the responder took no RTT sample until its new packet
 * numbers passed the old ones (a session's worth of traffic): its backoff, once doubled, stayed,
 * and every retransmission waited 64 RTOs (up to maxRtoMs, 3 s) instead of one.
 */
import { describe, expect, it } from 'vitest';
import { HalfPair, type FrameSealer } from '../core/pair/halfpair.js';
import { PairState } from '../core/pair/lifecycle.js';
import type { RegisterSpec } from '../core/pair/types.js';
import { FrameType } from '../wire/constants.js';
import { encodeFrame } from '../wire/header.js';
import { entangleWithSets, set } from './helpers.js';

const REGS: RegisterSpec[] = [{ name: 'kv', kind: 'map' }];

/** Packet numbers of an ETCP session, unsealed: `restart` is a new session (numbers from 0). */
class Session implements FrameSealer {
  pn: number;
  constructor(start: number) {
    this.pn = start;
  }
  seal(payload: Uint8Array): { frame: Uint8Array; packetNumber: number } {
    const packetNumber = this.pn++;
    return { frame: encodeFrame({ type: FrameType.Data, flags: 0, pairId: 1, packetNumber }, payload), packetNumber };
  }
}

function pair(start: number) {
  const t = { now: 0 };
  const sa = new Session(start);
  const sb = new Session(start);
  const a = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 7, registers: REGS, sealer: sa }, 0);
  const b = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 7, registers: REGS, sealer: sb }, 0);
  const link = { bToA: true };
  const step = (): void => {
    for (const p of [a, b]) if ((p.pollTimeout() ?? Infinity) <= t.now) p.handleTimeout(t.now);
    for (let d = a.pollTransmit(t.now); d; d = a.pollTransmit(t.now)) b.handleDatagram(t.now, d);
    for (let d = b.pollTransmit(t.now); d; d = b.pollTransmit(t.now)) if (link.bToA) a.handleDatagram(t.now, d);
    t.now++;
  };
  entangleWithSets(a, b, step, () => t.now);
  return { t, a, b, sa, sb, link, step };
}

/**
 * A rekey initiated by A (the sequencer) on a session whose packet numbers reached `start`,
 * then a follower write whose Propose is lost for 2.5 s (its timer backs off 64x): how
 * long after the path is clean again B's RTO stays backed off.
 */
function rekeyThenLoss(start: number, lateOldFrame: boolean) {
  const { t, a, b, sa, sb, link, step } = pair(start);
  // A accepts the HandshakeResp: it sends on the new session and forgets its packet space.
  a.resetPacketSpace();
  sa.pn = 0;
  // B, not yet switched, sends on the old session (a write of its own): A gets it after its switch.
  if (lateOldFrame) {
    b.propose(t.now, 'kv', set('b0', 'v'));
    for (let d = b.pollTransmit(t.now); d; d = b.pollTransmit(t.now)) a.handleDatagram(t.now, d);
  }
  // A's first frame on the new session reaches B: B switches too.
  b.resetPacketSpace();
  sb.pn = 0;
  for (let n = 0; n < 500; n++) step();
  expect([a.state, b.state]).toEqual([PairState.ENTANGLED, PairState.ENTANGLED]);
  // A write of B's, its Propose (and everything else B sends) lost for 2.5 s.
  link.bToA = false;
  b.propose(t.now, 'kv', set('b1', 'v'));
  for (let n = 0; n < 2500; n++) step();
  expect(b.rto()).toBeGreaterThan(1000); // backed off 64x
  link.bToA = true;
  const healed = t.now;
  for (let n = 0; n < 10_000 && b.rto() > 100; n++) step();
  return { backedOffMs: t.now - healed, b };
}

describe('an old session frame after a rekey', () => {
  it('without it, the responder takes RTT samples again at once (control)', () => {
    const { backedOffMs } = rekeyThenLoss(5000, false);
    expect(backedOffMs).toBeLessThan(200); // 42 ms
  });

  it('does not stop the responder taking RTT samples: its backoff resets once the path is clean', () => {
    const { backedOffMs, b } = rekeyThenLoss(5000, true);
    // Before: still backed off (RTO 1,280 ms) 400 s later, an idle pair's numbers far from 5000; now 42 ms.
    expect(backedOffMs).toBeLessThan(200);
    expect(b.rttMs).toBeDefined();
  });
});
