/**
 * Review 39, suspicion 4: the hold a peer names in OPEN was taken as it came, any u32 (up to 49.7
 * days), while this side's configuration allows 100 ms to 24 h: a peer kept its connections to our
 * servers held ~50 times longer than any hold we would configure. The receiver now holds for at most
 * MAX_HOLD_MS (PROTOCOL.md §16.5.4, rev 1.34). Two sessions are driven by hand through an outage.
 */
import { describe, expect, it } from 'vitest';
import { MAX_HOLD_MS } from '../core/wrap/hold.js';
import { WrapSession, type WrapEvent } from '../core/wrap/session.js';
import { CloseCode } from '../wire/wrap.js';

const target = { family: 4 as const, address: '10.0.0.2', port: 22 };
const opts = { windowBytes: 64 * 1024, maxConnections: 8, pingMs: 1000, silenceMs: 3000, mayDial: () => true };

/** Client `a` opens with `holdMs`; the carrier goes silent at 1 ms and never comes back; timers run to `until`. */
function outage(holdMs: number, until: number) {
  const a = new WrapSession({ ...opts, role: 0, bootId: 1n });
  const b = new WrapSession({ ...opts, role: 1, bootId: 2n });
  const evs: { side: 'a' | 'b'; at: number; ev: WrapEvent }[] = [];
  let linked = true;
  const pump = (now: number): void => {
    for (let moved = true; moved;) {
      moved = false;
      for (let r = a.pollRecord(now); r; r = a.pollRecord(now), moved = true) if (linked) b.handleRecord(now, Buffer.concat(r));
      for (let r = b.pollRecord(now); r; r = b.pollRecord(now), moved = true) if (linked) a.handleRecord(now, Buffer.concat(r));
    }
    for (let e = a.pollEvent(); e; e = a.pollEvent()) evs.push({ side: 'a', at: now, ev: e });
    for (let e = b.pollEvent(); e; e = b.pollEvent()) evs.push({ side: 'b', at: now, ev: e });
  };
  a.onCarrierUp(0);
  b.onCarrierUp(0);
  const id = a.openLocal(0, 22, target, holdMs)!;
  pump(0);
  b.dialed(0, id);
  a.localData(0, id, new Uint8Array(100).fill(1));
  pump(0);
  linked = false;
  let now = 1;
  for (let steps = 0; steps < 100_000; steps++) {
    const next = Math.min(a.pollTimeout() ?? Infinity, b.pollTimeout() ?? Infinity);
    if (next > until) break;
    now = Math.max(now, next);
    a.handleTimeout(now);
    b.handleTimeout(now);
    pump(now);
  }
  return evs.filter((e) => e.ev.type === 'close' && (e.ev as { code: CloseCode }).code === CloseCode.HoldExpired);
}

describe("a peer's OPEN hold", () => {
  it('above the maximum is held for the maximum at the receiver', () => {
    const held = outage(0xffffffff, MAX_HOLD_MS + 10_000);
    // Before the fix: b held the connection for 2^32 - 1 ms (49.7 days): no close in the first 24 h.
    expect(held.filter((e) => e.side === 'b').length).toBe(1);
    expect(held.find((e) => e.side === 'b')!.at).toBeLessThanOrEqual(MAX_HOLD_MS + 5_000);
  });

  it('within the bounds is held as named', () => {
    const held = outage(60_000, 200_000);
    const b = held.find((e) => e.side === 'b')!;
    expect(b.at).toBeGreaterThanOrEqual(60_000);
    expect(b.at).toBeLessThanOrEqual(65_000);
  });
});
