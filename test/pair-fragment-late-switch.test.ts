/**
 * Crossed handshakes (PROTOCOL.md §12.6): each host answers the other's HandshakeInit and
 * completes its own. A host that accepts its own HandshakeResp first and the peer's first Data
 * frame on the crossed session second switches twice (§12.6 *Switching*); its last switch is to
 * the crossed session, and it sends on that one from then on. The peer, for which that session is
 * current, takes those frames without a switch; a frame the host sent before its last switch, on
 * the session it initiated (unconfirmed at the peer), reordered behind them, makes the peer switch
 * to that session: the peer's pair forgets its packet space, and with it the partial messages it
 * reassembles (§3.7.3), after it had acknowledged pieces of the host's large message sent since the
 * host's last switch. The host, which does not switch again, never sent those pieces again.
 *
 * Modelled on two HalfPairs: the sender's switch, then pieces of its large Collapse taken and
 * acknowledged, then the receiver's switch.
 */
import { describe, expect, it } from 'vitest';
import { HalfPair, type FrameSealer } from '../core/pair/halfpair.js';
import type { RegisterSpec } from '../core/pair/types.js';
import { DeltaOp } from '../wire/delta.js';
import { FrameType } from '../wire/constants.js';
import { encodeFrame } from '../wire/header.js';
import { entangleWithSets } from './helpers.js';

const VALUE_BYTES = 256 * 1024;
const ONE_WAY_MS = 25;
const REGS: RegisterSpec[] = [{ name: 'kv', kind: 'map', quota: { maxValueBytes: 1024 * 1024 } }];
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

/** Packet numbers of an ETCP session, unsealed: a switch restarts them at 0. */
class Session implements FrameSealer {
  pn = 0;
  seal(payload: Uint8Array): { frame: Uint8Array; packetNumber: number } {
    const packetNumber = this.pn++;
    return { frame: encodeFrame({ type: FrameType.Data, flags: 0, pairId: 1, packetNumber }, payload), packetNumber };
  }
}

/**
 * A (the sequencer) collapses a large write; `piecesBefore` datagrams of it reach B before A
 * switches. When `late`, B switches only after it took (and A heard it acknowledge)
 * `piecesBetween` of A's datagrams sent since A's switch; otherwise B switches with A.
 * Returns how long after A's switch B holds the value, and what A's fragment layer resent.
 */
function lateSwitch(late: boolean, piecesBefore = 20, piecesBetween = 20) {
  const t = { now: 0 };
  const sa = new Session();
  const sb = new Session();
  const a = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 7, registers: REGS, sealer: sa }, 0);
  const b = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 7, registers: REGS, sealer: sb }, 0);
  const pollAll = (): void => {
    for (const p of [a, b]) if ((p.pollTimeout() ?? Infinity) <= t.now) p.handleTimeout(t.now);
  };
  /** Up to `n` of A's datagrams to B, then all of B's to A. */
  const exchange = (n: number): void => {
    for (let k = 0, d = a.pollTransmit(t.now); d && k < n; k++, d = k < n ? a.pollTransmit(t.now) : undefined) b.handleDatagram(t.now, d);
    for (let d = b.pollTransmit(t.now); d; d = b.pollTransmit(t.now)) a.handleDatagram(t.now, d);
  };
  const step = (): void => {
    pollAll();
    exchange(Infinity);
    t.now++;
  };
  entangleWithSets(a, b, step, () => t.now);
  const value = new Uint8Array(VALUE_BYTES).fill(7);
  a.propose(t.now, 'kv', { op: DeltaOp.Set, key: enc('big'), value });
  exchange(piecesBefore);
  t.now++;
  // A switches (its HandshakeResp accepted): it resends its large message from its first piece under a new id.
  a.resetPacketSpace();
  sa.pn = 0;
  if (late) {
    exchange(piecesBetween);
    t.now++;
  }
  // B switches (late: a reordered frame of the session A initiated, unconfirmed at B until then).
  b.resetPacketSpace();
  sb.pn = 0;
  const switchedAt = t.now;
  const resent0 = a.fragments.fragmentsResent;
  // From here on a path with a one-way delay of ONE_WAY_MS.
  const toB: { at: number; d: Uint8Array }[] = [];
  const toA: { at: number; d: Uint8Array }[] = [];
  const slowStep = (): void => {
    pollAll();
    while (toB.length > 0 && toB[0].at <= t.now) b.handleDatagram(t.now, toB.shift()!.d);
    while (toA.length > 0 && toA[0].at <= t.now) a.handleDatagram(t.now, toA.shift()!.d);
    for (let d = a.pollTransmit(t.now); d; d = a.pollTransmit(t.now)) toB.push({ at: t.now + ONE_WAY_MS, d });
    for (let d = b.pollTransmit(t.now); d; d = b.pollTransmit(t.now)) toA.push({ at: t.now + ONE_WAY_MS, d });
    t.now++;
  };
  for (let n = 0; n < 60_000 && b.register('kv').version < 4; n++) slowStep();
  expect([a.register('kv').version, b.register('kv').version]).toEqual([4, 4]);
  return { ms: t.now - switchedAt, resent: a.fragments.fragmentsResent - resent0, partials: b.fragments.partials };
}

describe('a receiver that switches session after the sender (crossed handshakes)', () => {
  it('without it, the large message arrives at once (control)', () => {
    const r = lateSwitch(false);
    expect(r.ms).toBeLessThan(300); // 186 ms
    expect(r.partials).toBe(0);
  });

  it('the pieces it acknowledged before its switch are sent again: the large message completes without waiting for the register', () => {
    const r = lateSwitch(true);
    // Before: 1,006 ms (the message counted as delivered whole, then the sequencer's retransmission
    // sent it again), and a partial message of 256 KiB left at B until it went stale; now 206 ms.
    expect(r.ms).toBeLessThan(300);
    expect(r.partials).toBe(0);
  });
});
