import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { MsgType, decodeMessages } from '../wire/messages.js';
import { decodeFrame } from '../wire/header.js';
import { HalfPair, type PairDeadline } from '../core/pair/halfpair.js';
import { PairState } from '../core/pair/lifecycle.js';
import { set } from './helpers.js';

// The pair's named timers (quinn-proto's connection/timer.rs): each armed one is visible with its deadline.
const TIMING = { keepaliveMs: 1000, silenceMs: 5000, maxAckDelayMs: 10, initialRtoMs: 250 };

function pair(localId: number, peerId: number, now: number): HalfPair {
  return new HalfPair({ pairId: 9, localId, peerId, seed: 7, registers: [{ name: 'kv', kind: 'map' }], timing: TIMING }, now);
}

/** Deliver everything `from` sends at `now` to `to`. */
function flush(now: number, from: HalfPair, to: HalfPair): number {
  let n = 0;
  for (let d = from.pollTransmit(now); d !== undefined; d = from.pollTransmit(now), n++) to.handleDatagram(now, d);
  return n;
}

const find = (ds: PairDeadline[], timer: string, register?: string) =>
  ds.find((d) => d.timer === timer && (register === undefined || ('register' in d && d.register === register)));

describe('pair timers', () => {
  it('name every deadline; pollTimeout is the earliest', () => {
    const a = pair(1, 2, 0); // sequencer
    const b = pair(2, 1, 0); // follower
    // Fresh: only the keepalive (due at once), no silence until the pair is up.
    expect(a.deadlines()).toEqual([{ timer: 'keepalive', at: -Infinity }]);
    a.handleTimeout(0);
    b.handleTimeout(0);
    expect(find(a.deadlines(), 'keepalive')?.at).toBe(1000);
    // The first datagram (manifest and Status: ack-eliciting for its manifest) arrives at 100: the Ack is due at 100 + maxAckDelayMs.
    flush(100, a, b);
    expect(find(b.deadlines(), 'ack')?.at).toBe(110);
    for (let now = 100; now < 200 && (b.state !== PairState.ENTANGLED || a.state !== PairState.ENTANGLED); now += 5) {
      flush(now, a, b);
      flush(now, b, a);
    }
    expect(a.state).toBe(PairState.ENTANGLED);
    const heard = b.deadlines();
    const silence = find(heard, 'silence');
    expect(silence).toBeDefined();
    expect(silence!.at % 5).toBe(0); // lastHeard + silenceMs, on the 5 ms steps above
    expect(silence!.at).toBeGreaterThanOrEqual(5100);
    expect(b.pollTimeout()).toBe(Math.min(...heard.map((d) => d.at)));

    // A follower's proposal arms its register's retransmission at now + RTO.
    const now = 300;
    b.propose(now, 'kv', set('x', '1'));
    flush(now, b, a);
    const rt = find(b.deadlines(), 'retransmit', 'kv');
    expect(rt).toEqual({ timer: 'retransmit', register: 'kv', at: now + b.rto() });
    // The sequencer commits and sends the version: its own retransmission timer is armed.
    flush(now, a, b);
    expect(find(a.deadlines(), 'retransmit', 'kv')).toBeDefined();

    // Silence: the peer goes quiet; the 'silence' timer fires at its deadline and the pair decoheres.
    const quiet = find(a.deadlines(), 'silence')!.at;
    for (let t = now + 1000; t < quiet; t += 1000) a.handleTimeout(t);
    expect([PairState.ENTANGLED, PairState.COLLAPSING]).toContain(a.state);
    a.handleTimeout(quiet);
    expect(a.state).toBe(PairState.DECOHERENT);
    expect(find(a.deadlines(), 'silence')).toBeUndefined();
  });

  it('a closed pair has no timers', () => {
    const a = pair(1, 2, 0);
    a.close(0);
    expect(a.deadlines()).toEqual([]);
    expect(a.pollTimeout()).toBeUndefined();
  });

  it('an Ack owed while the pair cannot send (no session: a violation cut) leaves no past deadline for handleTimeout to spin on', () => {
    const a = pair(1, 2, 0);
    const b = pair(2, 1, 0);
    a.handleTimeout(0);
    b.handleTimeout(0);
    flush(100, a, b); // an ack-eliciting Status: b owes an Ack at 110
    expect(find(b.deadlines(), 'ack')?.at).toBe(110);
    // The driver has no session for b (cut right after the payload): it never polls b's datagrams, only its timers.
    for (let now = 110; now < 140; now++) {
      b.handleTimeout(now);
      expect(b.pollTimeout()!).toBeGreaterThan(now);
    }
    expect(find(b.deadlines(), 'ack')).toBeUndefined();
    // The Ack is still owed: the first datagram once it can send again carries it.
    const d = b.pollTransmit(140)!;
    expect(decodeMessages(decodeFrame(d, () => true).payload).messages.some((m) => m.type === MsgType.Ack)).toBe(true);
    // A new payload after that arms a fresh deadline as before.
    flush(150, a, b);
    a.handleTimeout(1200);
    flush(1200, a, b);
    expect(find(b.deadlines(), 'ack')?.at).toBe(1210);
  });

  it('property: after handleTimeout(now), pollTimeout() is past now unless a datagram is ready to poll', () => {
    const step = fc.record({
      dt: fc.integer({ min: 0, max: 400 }),
      who: fc.constantFrom(0, 1),
      act: fc.constantFrom('deliver', 'timeout', 'propose'),
    });
    fc.assert(
      fc.property(fc.array(step, { maxLength: 60 }), fc.constantFrom(0, 1), (steps, mute) => {
        const p = [pair(1, 2, 0), pair(2, 1, 0)];
        let now = 0;
        let k = 0;
        for (const st of steps) {
          now += st.dt;
          const x = p[st.who];
          const y = p[1 - st.who];
          if (st.act === 'deliver') {
            // The muted side has no session: it receives, but the driver polls only its timers.
            if (st.who !== mute) flush(now, x, y);
          } else if (st.act === 'propose') {
            try {
              x.propose(now, 'kv', set(`k${k++}`, 'v'));
            } catch {
              // buffer-full: fine
            }
          } else {
            x.handleTimeout(now);
            const t = x.pollTimeout();
            if (t !== undefined && t <= now) expect(st.who !== mute && x.pollTransmit(now) !== undefined).toBe(true);
          }
        }
      }),
      { numRuns: 200 },
    );
  });
});
