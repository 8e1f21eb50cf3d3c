/**
 * Delta mode's NACK (PROTOCOL §16.9.3) bounded: a NACK below rawUntil asks again for octets
 * already resent raw; it is ignored and counted, so a peer cannot have the whole window resent
 * for every 13-octet NACK. An honest receiver that misses references still gets every byte.
 */
import { describe, expect, it } from 'vitest';
import { encodeRecord, OPEN_DELTA, RecordType } from '../wire/wrap.js';
import { ACK_DELAY_MS, WrapSession, type WrapEvent } from '../core/wrap/session.js';

const target = { family: 4 as const, address: '10.0.0.2', port: 80 };

/** Octets of every record `s` has to send now. */
function sent(s: WrapSession, now: number): number {
  let n = 0;
  for (let r = s.pollRecord(now); r; r = s.pollRecord(now)) for (const p of r) n += p.length;
  return n;
}

describe('NACK amplification', () => {
  const W = 4 << 20;
  /** This side serves a delta connection the peer opened, and has sent it a window the peer never acknowledges. */
  function serving(): { s: WrapSession; first: number } {
    const s = new WrapSession({ role: 0, bootId: 1n, windowBytes: W, maxConnections: 8, pingMs: 1e9, silenceMs: 1e9, mayDial: () => true });
    s.onCarrierUp(0);
    s.handleRecord(0, encodeRecord({ type: RecordType.Hello, version: 1, bootId: 2n, window: W, buffer: 64 << 20 }));
    s.handleRecord(0, encodeRecord({ type: RecordType.Open, conn: 3, wrapPort: 80, target, holdMs: 30000, flags: OPEN_DELTA }));
    s.dialed(0, 3);
    for (let i = 0; i < 64; i++) s.localData(0, 3, new Uint8Array(64 * 1024).fill(i));
    return { s, first: sent(s, 100) };
  }
  const violations = (s: WrapSession): string[] => {
    const kinds: string[] = [];
    for (let e = s.pollEvent(); e; e = s.pollEvent()) if (e.type === 'violation') kinds.push(e.kind);
    return kinds;
  };

  it('ten NACKs at the acknowledged offset: the window is resent once, the other nine are ignored and counted', () => {
    const { s, first } = serving();
    expect(first).toBeGreaterThan(W - 1024);
    let again = 0;
    for (let k = 0; k < 10; k++) {
      s.handleRecord(200 + k, encodeRecord({ type: RecordType.Nack, conn: 3, offset: 0 }));
      again += sent(s, 200 + k);
    }
    expect(again).toBeLessThan(first + 64 * 1024);
    expect(again).toBeGreaterThan(W - 1024); // the first one is honoured
    expect(s.counters.violations).toBe(9);
    expect(violations(s)).toEqual(Array(9).fill('nack'));
    expect(s.conns.has(3)).toBe(true); // ignored, not a reset
  });

  it('NACKs creeping up one octet at a time gain nothing either', () => {
    const { s, first } = serving();
    let again = 0;
    for (let k = 0; k < 10; k++) {
      s.handleRecord(200 + k, encodeRecord({ type: RecordType.Nack, conn: 3, offset: k }));
      again += sent(s, 200 + k);
    }
    expect(again).toBeLessThan(first + 64 * 1024);
    expect(s.counters.violations).toBe(9);
  });
});

describe('an honest receiver that misses references (a smaller cache than the sender assumes)', () => {
  it('NACKs them and gets every byte, with no violation', () => {
    const content = (n: number, seed: number): Uint8Array => {
      const out = new Uint8Array(n);
      let x = seed;
      for (let i = 0; i < n; i++) {
        x = (Math.imul(x, 1103515245) + 12345) >>> 0;
        out[i] = x >>> 24;
      }
      return out;
    };
    const base = { windowBytes: 1 << 20, maxConnections: 8, pingMs: 1e9, silenceMs: 1e9, mayDial: () => true };
    const a = new WrapSession({ ...base, role: 0, bootId: 1n, deltaCacheBytes: 1 }); // caches (almost) nothing
    const b = new WrapSession({ ...base, role: 1, bootId: 2n });
    a.onCarrierUp(0);
    b.onCarrierUp(0);
    const evs: WrapEvent[] = [];
    let now = 0;
    const pump = (): void => {
      for (let moved = true; moved;) {
        moved = false;
        for (let r = a.pollRecord(now); r; r = a.pollRecord(now), moved = true) b.handleRecord(now, Buffer.concat(r));
        for (let r = b.pollRecord(now); r; r = b.pollRecord(now), moved = true) a.handleRecord(now, Buffer.concat(r));
        for (let e = a.pollEvent(); e; e = a.pollEvent()) {
          evs.push(e);
          if (e.type === 'deliver') a.drained(now, e.conn, e.data.length);
        }
        for (let e = b.pollEvent(); e; e = b.pollEvent()) evs.push(e);
      }
    };
    const body = content(300_000, 3);
    const got: Buffer[] = [];
    for (let round = 0; round < 3; round++) {
      const id = a.openLocal(now, 80, target, 30_000, true)!;
      pump();
      b.dialed(now, id);
      b.localData(now, id, body);
      b.localEnd(now, id);
      const start = evs.length;
      for (let i = 0; i < 200; i++) {
        now += ACK_DELAY_MS;
        a.handleTimeout(now);
        b.handleTimeout(now);
        pump();
      }
      const data = evs.slice(start).filter((e) => e.type === 'deliver' && e.conn === id) as { data: Uint8Array }[];
      got.push(Buffer.concat(data.map((d) => d.data)));
    }
    for (const g of got) expect(Buffer.compare(g, body)).toBe(0);
    expect(b.counters.refsSent).toBeGreaterThan(0);
    expect(a.counters.nacksSent).toBeGreaterThan(1);
    expect(evs.filter((e) => e.type === 'violation')).toEqual([]);
    expect(a.counters.violations + b.counters.violations).toBe(0);
  });
});
