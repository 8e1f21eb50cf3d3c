/**
 * The per-user reserve of a peer's wrap slots (PROTOCOL §16.5.1) across a restart through the
 * descriptor store (core/wrap/handover.ts): the handed-over connections keep their user, so the
 * user who held 7/8 of the slots before the restart is still refused the reserve after it, and
 * another user still gets it. Before, the handover dropped the uid: the next process counted
 * those connections as no one's, and the same user took the whole reserve (every slot), leaving
 * other users' connections reset (`too-many-connections`).
 */
import { describe, expect, it } from 'vitest';
import { decodeHandover, encodeHandover, HANDOVER_VERSION } from '../core/wrap/handover.js';
import { WrapSession } from '../core/wrap/session.js';

const MAX = 64; // reserve ⌊64/8⌋ = 8: one user alone gets 56
const opts = { windowBytes: 65536, maxConnections: MAX, pingMs: 1000, silenceMs: 3000 };
const target = { family: 4 as const, address: '192.0.2.7', port: 5432 };
const HEAVY = 1000;
const OTHER = 2000;

/** Open connections for `uid` as the manager does (slotRefusal first) until refused; how many it got. */
function fill(s: WrapSession, now: number, uid: number): number {
  let n = 0;
  while (!s.slotRefusal(uid)) {
    s.openLocal(now, 5432, target, 30_000, false, false, false, uid);
    n++;
  }
  return n;
}

describe('the reserve of a peer’s slots across a handover', () => {
  it('a user holding 7/8 of the slots before a restart is refused the reserve after it', () => {
    const a = new WrapSession({ ...opts, role: 0, bootId: 1n });
    const b = new WrapSession({ ...opts, role: 1, bootId: 2n, mayDial: () => true });
    a.onCarrierUp(0);
    b.onCarrierUp(0);
    for (let moved = true; moved;) {
      moved = false;
      for (let r = a.pollRecord(0); r; r = a.pollRecord(0), moved = true) b.handleRecord(0, Buffer.concat(r));
      for (let r = b.pollRecord(0); r; r = b.pollRecord(0), moved = true) a.handleRecord(0, Buffer.concat(r));
    }
    expect(fill(a, 1, HEAVY)).toBe(MAX - MAX / 8);
    expect(a.slotRefusal(HEAVY)).toBe('user-share');
    a.onCarrierDown(10);

    // The restart: every connection goes to the next process through the encoded state.
    const bytes = encodeHandover({ bootId: 1n, peers: [a.exportHandover(20, 'b', (c) => ({ fd: c.id, received: c.recv.received }))] });
    const state = decodeHandover(bytes);
    const a2 = new WrapSession({ ...opts, role: 0, bootId: state.bootId });
    expect(a2.importHandover(30, state.peers[0]).size).toBe(MAX - MAX / 8);

    expect(a2.slotsOf(HEAVY)).toBe(MAX - MAX / 8);
    expect(a2.slotRefusal(HEAVY)).toBe('user-share');
    // Another user still has the whole reserve.
    expect(fill(a2, 40, OTHER)).toBe(MAX / 8);
    expect(a2.audit()).toBeUndefined();
  });

  it('a state of the previous version (no uids) is still read: its connections are of no known user', () => {
    const s = new WrapSession({ ...opts, role: 0, bootId: 1n });
    s.openLocal(0, 5432, target, 30_000, false, false, false, HEAVY);
    const v = encodeHandover({ bootId: 1n, peers: [s.exportHandover(1, 'b', (c) => ({ fd: 0, received: c.recv.received }))] });
    const decoded = decodeHandover(v);
    expect(decoded.peers[0].conns[0].uid).toBe(HEAVY);
    expect(HANDOVER_VERSION).toBeGreaterThanOrEqual(3);
    // Version 2: the same connection without the uid flag and its 4 octets.
    const s2 = new WrapSession({ ...opts, role: 0, bootId: 1n });
    s2.openLocal(0, 5432, target, 30_000);
    const v2 = Uint8Array.from(
      encodeHandover({ bootId: 1n, peers: [s2.exportHandover(1, 'b', (c) => ({ fd: 0, received: c.recv.received }))] }),
    );
    new DataView(v2.buffer).setUint16(8, 2);
    expect(decodeHandover(v2).peers[0].conns[0].uid).toBeUndefined();
  });
});
