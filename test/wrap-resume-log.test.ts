/**
 * Wrapped connections resumed after a carrier loss are logged rate-limited per peer
 * (drivers/wrap/manager.ts, VIOLATION_LOG_MS): each was an info line of its own, and a peer that
 * drops the carrier and RESUMEs every connection on the next one (a reconnect costs it one
 * handshake) had this host write a line per connection per carrier, without bound.
 */
import { describe, expect, it } from 'vitest';
import pino from 'pino';
import { generateKeyPair } from '../crypto/primitives.js';
import { VIOLATION_LOG_MS, WrapManager } from '../drivers/wrap/manager.js';
import { WrapSession } from '../core/wrap/session.js';
import { WRAP_TEST_SETTINGS } from './helpers.js';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Internals = any;

const target = { family: 4 as const, address: '192.0.2.7', port: 5432 };

describe('resumed wrapped connections in the log', () => {
  it('a peer cycling the carrier under 64 connections, 50 times: a line per 10 s, the count carried', () => {
    const lines: { msg: string; peer?: string; conn?: number; suppressed?: number }[] = [];
    const log = pino({ level: 'info' }, { write: (s: string) => void lines.push(JSON.parse(s)) });
    const m = new WrapManager(
      {
        key: generateKeyPair(),
        peers: [{ name: 'b', publicKey: generateKeyPair().publicKey, role: 1 }],
        peerAddr: () => undefined,
        listen: { host: '127.0.0.1', port: 0 },
      },
      WRAP_TEST_SETTINGS,
      [],
      log,
    );
    const mi = m as Internals;
    let t = 1_000;
    mi.now = () => t;
    const ps = mi.peers.get('b');
    const a: WrapSession = ps.session;
    // The hostile peer: a session that answers as an honest one would, on carriers it drops at will.
    const b = new WrapSession({ ...WRAP_TEST_SETTINGS, pingMs: 1000, role: 0, bootId: 9n, mayDial: () => true });
    const pump = (): void => {
      for (let moved = true; moved;) {
        moved = false;
        for (let r = a.pollRecord(t); r; r = a.pollRecord(t), moved = true) b.handleRecord(t, Buffer.concat(r));
        for (let r = b.pollRecord(t); r; r = b.pollRecord(t), moved = true) a.handleRecord(t, Buffer.concat(r));
        for (let e = b.pollEvent(); e; e = b.pollEvent()) if (e.type === 'dial') b.dialed(t, e.conn);
      }
      mi.moveRecords(ps, t); // a's events, as the manager acts on them (its log)
    };
    a.onCarrierUp(t);
    b.onCarrierUp(t);
    pump();
    const N = 64;
    for (let i = 0; i < N; i++) a.openLocal(t, 5432, target, 60_000);
    pump();
    expect(a.conns.size).toBe(N);

    const resumed = (): typeof lines => lines.filter((l) => /resumed/.test(l.msg));
    const ROUNDS = 50;
    for (let k = 0; k < ROUNDS; k++) {
      t += 10;
      a.onCarrierDown(t);
      b.onCarrierDown(t);
      a.onCarrierUp(t);
      b.onCarrierUp(t);
      pump();
    }
    const n = resumed().length;
    const octets = resumed().reduce((s, l) => s + JSON.stringify(l).length, 0);
    console.log(`${ROUNDS} carriers x ${N} connections: ${n} resumed lines, ${octets} octets`);
    expect(a.conns.size).toBe(N); // every connection resumed each time, none closed
    expect(n).toBeLessThanOrEqual(2);

    // 10 s later the next resumption is a line again, with what was not logged meanwhile.
    t += VIOLATION_LOG_MS;
    a.onCarrierDown(t);
    b.onCarrierDown(t);
    a.onCarrierUp(t);
    b.onCarrierUp(t);
    pump();
    const last = resumed().at(-1)!;
    expect(resumed().length).toBe(n + 1);
    expect(last.peer).toBe('b');
    // Every resumption of the 50 carriers is the first line or counted in this one.
    expect(last.suppressed).toBe(ROUNDS * N - 1);
    expect(a.conns.size).toBe(N);
  });
});
