/**
 * Review 39o-1: openLocal's id counter wraps at 2^32 (back to 2 + role) without skipping ids that
 * are still live. The counter survives restarts (a handover carries nextId), so a spookd whose
 * clients opened 2^31 connections through one peer (25 days at 1,000 a second, across
 * restarts) gives a new connection the id of one still open: the new WrapConn replaces the old
 * in `live` (the old client is orphaned, never reset), and the peer takes the OPEN for a live id
 * as a resent OPEN: the new client's bytes past the old stream's offset are delivered to the OLD
 * server connection, and the old server's next bytes reset the new client.
 */
import { describe, expect, it } from 'vitest';
import { WrapSession, type WrapEvent } from '../core/wrap/session.js';

const opts = { windowBytes: 64 * 1024, maxConnections: 8, pingMs: 1000, silenceMs: 3000, mayDial: () => true };
const target = { family: 4 as const, address: '10.0.0.2', port: 22 };
const te = new TextEncoder();

function pumpOf(a: () => WrapSession, b: WrapSession): (now?: number) => { a: WrapEvent[]; b: WrapEvent[] } {
  return (now = 0) => {
    const evs = { a: [] as WrapEvent[], b: [] as WrapEvent[] };
    for (let moved = true; moved;) {
      moved = false;
      for (let r = a().pollRecord(now); r; r = a().pollRecord(now), moved = true) b.handleRecord(now, Buffer.concat(r));
      for (let r = b.pollRecord(now); r; r = b.pollRecord(now), moved = true) a().handleRecord(now, Buffer.concat(r));
    }
    for (let e = a().pollEvent(); e; e = a().pollEvent()) evs.a.push(e);
    for (let e = b.pollEvent(); e; e = b.pollEvent()) evs.b.push(e);
    return evs;
  };
}

const delivered = (evs: WrapEvent[], conn: number): string =>
  Buffer.concat(evs.filter((e) => e.type === 'deliver' && e.conn === conn).map((e) => (e as { data: Uint8Array }).data)).toString();

describe('a wrapped connection id is never given to a new connection while one is live', () => {
  it('after the id counter wraps (carried across a restart), the next OPEN does not reuse a live id', () => {
    let a = new WrapSession({ ...opts, role: 0, bootId: 1n });
    const b = new WrapSession({ ...opts, role: 1, bootId: 2n });
    const pump = pumpOf(() => a, b);
    a.onCarrierUp(0);
    b.onCarrierUp(0);
    pump();
    // A long-lived connection (an SSH session, a replication stream): id 2.
    const old = a.openLocal(0, 22, target, 30_000)!;
    expect(old).toBe(2);
    pump();
    b.dialed(0, old);
    a.localData(0, old, te.encode('ssh-old'));
    let ev = pump(10);
    expect(delivered(ev.b, old)).toBe('ssh-old');
    b.drained(10, old, 7);
    b.localData(10, old, te.encode('old-server'));
    ev = pump(20);
    expect(delivered(ev.a, old)).toBe('old-server');
    a.drained(20, old, 10);
    pump(40);

    // A restart through the descriptor store. The exported counter is what it would be after
    // 2^31 - 1 more connections (opened and ended meanwhile): nothing else changes.
    a.onCarrierDown(50);
    b.onCarrierDown(50);
    const h = a.exportHandover(50, 'b', (c) => ({ fd: 0, received: c.recv.received }));
    expect(h.conns.map((c) => c.id)).toEqual([old]);
    h.nextId = 0xfffffffe;
    a = new WrapSession({ ...opts, role: 0, bootId: 1n });
    expect([...a.importHandover(60, h)]).toEqual([old]);
    a.onCarrierUp(70);
    b.onCarrierUp(70);
    pump(70);
    expect(a.conns.get(old)?.state).toBe('open');

    const last = a.openLocal(80, 22, target, 30_000)!;
    expect(last).toBe(0xfffffffe);
    a.localReset(80, last, 'gone');
    pump(80);

    // The counter wraps: the next id must not be one still carrying a connection.
    const fresh = a.openLocal(90, 22, target, 30_000)!;
    const reused = fresh === old;
    a.localData(90, fresh, te.encode('GET /private?token=s3cret HTTP/1.1\r\n\r\n'));
    ev = pump(90);
    // What the old server connection (id 2 at b) received of the NEW client's request:
    const leaked = delivered(ev.b, old);
    expect({ reused, leaked }).toEqual({ reused: false, leaked: '' });
  });
});
