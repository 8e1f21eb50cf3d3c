/**
 * Containment of one peer's input across a restart through a handover: an OPEN the protocol
 * forbids (id 0, port 0) is refused on receipt, every connection a session can legitimately hold
 * (id 1 included) decodes, and an entry of the state that still does not check out costs that
 * connection or peer, never the state of every peer (core/wrap/handover.ts, drivers/wrap/handover-store.ts).
 */
import { describe, expect, it } from 'vitest';
import { fstatSync } from 'node:fs';
import type { Logger } from 'pino';
import { encodeRecord, RecordType, type Target } from '../wire/wrap.js';
import { WrapSession, type WrapEvent } from '../core/wrap/session.js';
import { decodeHandover, encodeHandover, HandoverError, type HandoverConn, type HandoverState } from '../core/wrap/handover.js';
import { STATE_FDNAME, connFdName, takeHandover } from '../drivers/wrap/handover-store.js';
import { closeFd, memfdWith } from '../drivers/wrap/fdstore.js';

const target: Target = { family: 4, address: '10.0.0.2', port: 22 };
const opts = { windowBytes: 64 * 1024, maxConnections: 8, pingMs: 1000, silenceMs: 3000, mayDial: () => true };

/** A session of `role` whose carrier is up and the peer's HELLO in. */
function up(role: 0 | 1): WrapSession {
  const s = new WrapSession({ ...opts, role, bootId: 1n });
  s.onCarrierUp(0);
  s.handleRecord(0, encodeRecord({ type: RecordType.Hello, version: 1, bootId: 2n, window: 65536, buffer: 1 << 20 }));
  return s;
}

function events(s: WrapSession): WrapEvent[] {
  const out: WrapEvent[] = [];
  for (let e = s.pollEvent(); e; e = s.pollEvent()) out.push(e);
  return out;
}

const open = (s: WrapSession, conn: number, wrapPort = 22, t: Target = target): void =>
  s.handleRecord(1, encodeRecord({ type: RecordType.Open, conn, wrapPort, target: t, holdMs: 30_000, flags: 0 }));

/** What the next process would read back of `s` (no descriptor left out). */
function roundTrip(s: WrapSession): HandoverState {
  let fd = 0;
  const peer = s.exportHandover(10, 'p', (c) => ({ fd: fd++, received: c.recv.received }));
  return decodeHandover(encodeHandover({ bootId: 1n, peers: [peer] }));
}

describe('an OPEN the protocol forbids is refused on receipt', () => {
  it('id 0 (to a role-1 side, whose parity it is not), wrapPort 0, target port 0: a violation, no connection, no dial', () => {
    for (const [role, conn, wrapPort, port] of [
      [1, 0, 22, 22],
      [0, 3, 0, 22],
      [0, 3, 22, 0],
      [1, 2, 0, 0],
    ] as const) {
      const s = up(role);
      events(s);
      open(s, conn, wrapPort, { ...target, port });
      const evs = events(s);
      expect(s.conns.size).toBe(0);
      expect(evs).toEqual([expect.objectContaining({ type: 'violation', kind: 'open' })]);
      expect(s.counters.violations).toBe(1);
      // Nothing queued for it either (the HELLO went out first).
      for (let r = s.pollRecord(2); r; r = s.pollRecord(2)) expect(Buffer.concat(r)[0]).toBe(RecordType.Hello);
      // Still a working session: a well-formed OPEN is taken.
      open(s, 2 + (1 - role) + 2);
      expect(s.conns.size).toBe(1);
    }
  });
});

describe('every connection a session can hold goes through a handover', () => {
  it('a peer-opened connection of id 1 (the follower id after its ids wrap) and a completed one of id 1', () => {
    const s = up(0);
    open(s, 1);
    s.dialed(1, 1);
    open(s, 5);
    s.dialed(1, 5);
    let h = roundTrip(s);
    expect(h.peers[0].conns.map((c) => c.id).sort()).toEqual([1, 5]);
    const next = new WrapSession({ ...opts, role: 0, bootId: 1n });
    expect([...next.importHandover(20, h.peers[0])].sort()).toEqual([1, 5]);

    // Connection 1 completes: remembered, and handed over, as completed.
    s.localEnd(2, 1);
    for (let r = s.pollRecord(2); r; r = s.pollRecord(2));
    s.handleRecord(3, encodeRecord({ type: RecordType.Fin, conn: 1, offset: 0 }));
    s.handleRecord(3, encodeRecord({ type: RecordType.Ack, conn: 1, offset: 0 }));
    expect(s.conns.has(1)).toBe(false);
    h = roundTrip(s);
    expect(h.peers[0].completed).toEqual([{ id: 1, finOut: 0, finIn: 0 }]);
    expect(h.peers[0].conns.map((c) => c.id)).toEqual([5]);
  });

  it("a follower's own ids wrapping to 1 (§16.4 skips only 0)", () => {
    const s = new WrapSession({ ...opts, role: 1, bootId: 1n });
    s.importHandover(0, { peer: 'p', peerBootId: undefined, nextId: 0xffffffff, conns: [] });
    s.onCarrierUp(0);
    s.handleRecord(0, encodeRecord({ type: RecordType.Hello, version: 1, bootId: 2n }));
    expect(s.openLocal(1, 22, target, 30_000)).toBe(0xffffffff);
    expect(s.openLocal(1, 22, target, 30_000)).toBe(1);
    const h = roundTrip(s);
    expect(h.peers[0].conns.map((c) => c.id).sort((x, y) => x - y)).toEqual([1, 0xffffffff]);
  });
});

const conn = (id: number, fd: number, over: Partial<HandoverConn> = {}): HandoverConn => ({
  id,
  local: false,
  openSent: false,
  state: 'open',
  wrapPort: 22,
  target,
  holdMs: 30_000,
  heldMs: 0,
  fd,
  sendAcked: 0,
  sendBytes: new Uint8Array([1, 2, 3]),
  sendFin: false,
  received: 7,
  recvFinAt: undefined,
  endDelivered: false,
  ...over,
});

/** Peer a: one bad connection (wrapPort 0), one good, a bad completed id 0; peer b: good; peer a again (its name twice). */
const mixed: HandoverState = {
  bootId: 9n,
  peers: [
    {
      peer: 'a',
      peerBootId: 3n,
      nextId: 8,
      conns: [conn(3, 0, { wrapPort: 0 }), conn(5, 1)],
      completed: [
        { id: 0, finOut: 1, finIn: 1 },
        { id: 7, finOut: 2, finIn: 3 },
      ],
    },
    { peer: 'b', peerBootId: 4n, nextId: 2, conns: [conn(1, 2), conn(9, 3, { target: { ...target, port: 0 } })], completed: [] },
    { peer: 'a', peerBootId: 5n, nextId: 2, conns: [conn(11, 4)], completed: [] },
  ],
};

describe('an entry of the state that does not check out costs that entry, not every peer', () => {
  it('decodeHandover with `drop`: the bad connections, completed entries and peer are left out and named, the rest kept', () => {
    const bytes = encodeHandover(mixed);
    expect(() => decodeHandover(bytes)).toThrow(HandoverError); // without `drop`: refused whole, as before
    const dropped: string[] = [];
    const h = decodeHandover(bytes, (e) => dropped.push(e.field));
    expect(dropped).toEqual(['peers[0].conns[0].wrapPort', 'peers[0].completed[0].id', 'peers[1].conns[1].target.port', 'peers[2].name']);
    expect(h.bootId).toBe(9n);
    expect(h.peers.map((p) => [p.peer, p.conns.map((c) => c.id), p.completed?.map((c) => c.id)])).toEqual([
      ['a', [5], [7]],
      ['b', [1], []],
    ]);
    expect(h.peers[0].conns[0]).toEqual(mixed.peers[0].conns[1]);
    // A state that cannot be read past is still refused whole.
    expect(() => decodeHandover(bytes.subarray(0, bytes.length - 1), () => {})).toThrow(HandoverError);
  });

  it('random damage with `drop`: only HandoverError is thrown, and what is kept checks out', () => {
    const bytes = encodeHandover(mixed);
    let seed = 5;
    const rnd = (n: number): number => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % n;
    for (let i = 0; i < 3000; i++) {
      const x = Uint8Array.from(bytes);
      for (let k = 1 + rnd(3); k > 0; k--) x[rnd(x.length)] = rnd(256);
      let h: HandoverState;
      try {
        h = decodeHandover(x, () => {});
      } catch (e) {
        expect(e).toBeInstanceOf(HandoverError);
        continue;
      }
      const fds = new Set<number>();
      for (const p of h.peers)
        for (const c of p.conns) {
          expect(c.id).not.toBe(0);
          expect(c.wrapPort * c.target.port).not.toBe(0);
          expect(fds.has(c.fd)).toBe(false);
          fds.add(c.fd);
        }
      expect(new Set(h.peers.map((p) => p.peer)).size).toBe(h.peers.length);
    }
  });

  it('takeHandover: a warning names the entries left out; the other peers and connections are taken over', () => {
    const state = memfdWith('s', encodeHandover(mixed));
    const socks = [0, 1, 2, 3, 4].map((i) => memfdWith(`c${i}`, Buffer.from('x')));
    const warnings: string[] = [];
    const log = { warn: (o: object, m: string) => warnings.push(`${m} ${JSON.stringify(o)}`), info: () => {} } as unknown as Logger;
    const got = takeHandover(log, {}, [...socks.map((fd, i) => ({ fd, name: connFdName(i) })), { fd: state, name: STATE_FDNAME }]);
    try {
      expect(got).toBeDefined();
      expect(got!.state.bootId).toBe(9n);
      expect(got!.state.peers.map((p) => p.conns.map((c) => c.fd))).toEqual([[1], [2]]);
      // Every socket is still there: restoreHandover closes (resets) the ones the state no longer names.
      expect([...got!.fds.keys()].sort()).toEqual([0, 1, 2, 3, 4]);
      expect(warnings).toHaveLength(1);
      expect(warnings[0]).toMatch(/entries of the state left out.*"dropped":4.*peers\[0\]\.conns\[0\]\.wrapPort: 0/);
      expect(() => fstatSync(state)).toThrow(); // the state's descriptor is closed
    } finally {
      for (const fd of socks) closeFd(fd);
    }
  });
});
