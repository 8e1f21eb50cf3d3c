/**
 * The wrap state handed from one spookd to the next across a restart (core/wrap/handover.ts) and
 * its use by WrapSession: round trips, refusals that name the field, and a session restarted in
 * the middle of both streams that RESUMEs with its peer (same bootId) instead of being reset.
 */
import { describe, expect, it } from 'vitest';
import {
  decodeHandover,
  encodeHandover,
  HANDOVER_MAX_CONNS,
  HANDOVER_MAX_PEERS,
  HandoverError,
  type HandoverState,
} from '../core/wrap/handover.js';
import { WrapSession, type WrapEvent } from '../core/wrap/session.js';
import { DEFAULT_WRAP_SIM, runWrapSim } from '../testing/sim/wrap.js';

const sample: HandoverState = {
  bootId: 0xfedcba9876543210n,
  peers: [
    {
      peer: 'beta',
      peerBootId: 77n,
      nextId: 12,
      conns: [
        {
          id: 4,
          local: true,
          openSent: true,
          state: 'open',
          wrapPort: 22,
          target: { family: 4, address: '10.0.0.2', port: 22 },
          holdMs: 925_000,
          heldMs: 120,
          fd: 0,
          sendAcked: 2 ** 40,
          sendBytes: new Uint8Array([1, 2, 3, 4, 5]),
          sendFin: true,
          received: 99,
          recvFinAt: 99,
          endDelivered: true,
        },
        {
          id: 7,
          local: false,
          openSent: false,
          state: 'held',
          wrapPort: 443,
          target: { family: 6, address: 'fd00::2', port: 443 },
          holdMs: 30_000,
          heldMs: 0,
          fd: 1,
          sendAcked: 0,
          sendBytes: new Uint8Array(0),
          sendFin: false,
          received: 5,
          recvFinAt: undefined,
          endDelivered: false,
        },
      ],
      completed: [{ id: 9, finOut: 2 ** 41, finIn: 64 }],
    },
    { peer: 'gamma', peerBootId: undefined, nextId: 2, conns: [], completed: [] },
  ],
};

function fault(b: Uint8Array): HandoverError {
  try {
    decodeHandover(b);
  } catch (e) {
    expect(e).toBeInstanceOf(HandoverError);
    return e as HandoverError;
  }
  throw new Error('decoded');
}

describe('handover state', () => {
  it('round-trips', () => {
    expect(decodeHandover(encodeHandover(sample))).toEqual(sample);
    expect(decodeHandover(encodeHandover({ bootId: 1n, peers: [] }))).toEqual({ bootId: 1n, peers: [] });
  });

  it('reads a version 1 state (no completed connections) and refuses a completed id that is live', () => {
    const gamma = { peer: 'gamma', peerBootId: undefined, nextId: 2, conns: [] };
    const v2 = encodeHandover({ bootId: 1n, peers: [gamma] });
    // Version 1: the same bytes without the peer's trailing count of completed connections.
    const v1 = Uint8Array.from(v2.subarray(0, v2.length - 4));
    new DataView(v1.buffer).setUint16(8, 1);
    expect(decodeHandover(v1)).toEqual({ bootId: 1n, peers: [{ ...gamma, completed: [] }] });
    const both = { ...sample, peers: [{ ...sample.peers[0], completed: [{ id: 4, finOut: 1, finIn: 1 }] }] };
    expect(fault(encodeHandover(both)).field).toBe('peers[0].completed[0].id');
  });

  it('refuses every truncation, naming the field', () => {
    const b = encodeHandover(sample);
    for (let n = 0; n < b.length; n++) expect(fault(b.subarray(0, n)).message).toMatch(/^handover state: [\w.[\]]+: /);
    expect(fault(b.subarray(0, 12)).field).toBe('bootId');
    expect(fault(new Uint8Array([...b, 0])).field).toBe('end');
  });

  it('refuses corrupt fields by name', () => {
    const b = encodeHandover(sample);
    const at = (f: (x: Uint8Array) => void): HandoverError => {
      const x = Uint8Array.from(b);
      f(x);
      return fault(x);
    };
    expect(at((x) => (x[0] = 0x41)).field).toBe('magic');
    expect(at((x) => (x[9] = 9)).field).toBe('version');
    // peers count past the bound
    expect(at((x) => new DataView(x.buffer).setUint32(18, HANDOVER_MAX_PEERS + 1)).field).toBe('peers');
    const peer0 = 22; // name length u16, then 'beta'
    const conns0 = peer0 + 2 + 4 + 1 + 8 + 4;
    expect(at((x) => new DataView(x.buffer).setUint32(conns0, HANDOVER_MAX_CONNS + 1)).field).toBe('peers[0].conns');
    const c0 = conns0 + 4;
    expect(at((x) => (x[c0 + 5] = 3)).field).toBe('peers[0].conns[0].state');
    expect(at((x) => (x[c0 + 4] = 0x80)).field).toBe('peers[0].conns[0].flags');
    expect(at((x) => (x[c0 + 8] = 5)).field).toBe('peers[0].conns[0].target.family');
    expect(at((x) => new DataView(x.buffer).setUint32(c0, 0)).field).toBe('peers[0].conns[0].id');
    // The second connection with the first one's id, and with its descriptor.
    const c1 = c0 + 10 + 8 + 2 + 4 + 4 + 4 + 24 + 4 + 5;
    expect(at((x) => new DataView(x.buffer).setUint32(c1, 4)).field).toBe('peers[0].conns[1].id');
    expect(at((x) => new DataView(x.buffer).setUint32(c1 + 10 + 7 + 10, 0)).field).toBe('peers[0].conns[1].fd');
    // The peer's FIN below what was received.
    expect(at((x) => new DataView(x.buffer).setBigUint64(c0 + 10 + 8 + 2 + 4 + 4 + 4 + 16, 98n)).field).toBe('peers[0].conns[0].recvFinAt');
  });

  it('never throws anything but HandoverError on random damage', () => {
    const b = encodeHandover(sample);
    let seed = 17;
    const rnd = (n: number): number => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) % n;
    let refused = 0;
    for (let i = 0; i < 3000; i++) {
      const x = Uint8Array.from(b);
      for (let k = 1 + rnd(3); k > 0; k--) x[rnd(x.length)] = rnd(256);
      try {
        decodeHandover(x.subarray(0, x.length - rnd(2) * rnd(x.length)));
      } catch (e) {
        expect(e).toBeInstanceOf(HandoverError);
        refused++;
      }
    }
    expect(refused).toBeGreaterThan(1000);
  });
});

const opts = { windowBytes: 64 * 1024, maxConnections: 8, pingMs: 1000, silenceMs: 3000, mayDial: () => true };
const target = { family: 4 as const, address: '10.0.0.2', port: 22 };

/** Records from `from` to `to` until neither has any; each side's events. */
function pump(a: WrapSession, b: WrapSession, now: number): { a: WrapEvent[]; b: WrapEvent[] } {
  for (let moved = true; moved;) {
    moved = false;
    for (let r = a.pollRecord(now); r; r = a.pollRecord(now), moved = true) b.handleRecord(now, Buffer.concat(r));
    for (let r = b.pollRecord(now); r; r = b.pollRecord(now), moved = true) a.handleRecord(now, Buffer.concat(r));
  }
  const evs = { a: [] as WrapEvent[], b: [] as WrapEvent[] };
  for (let e = a.pollEvent(); e; e = a.pollEvent()) evs.a.push(e);
  for (let e = b.pollEvent(); e; e = b.pollEvent()) evs.b.push(e);
  return evs;
}

const delivered = (evs: WrapEvent[]): string => evs.map((e) => (e.type === 'deliver' ? Buffer.from(e.data).toString() : '')).join('');

describe('a session restarted through a handover', () => {
  it('resumes both streams with its peer: no reset, nothing lost or repeated', () => {
    const a = new WrapSession({ ...opts, role: 0, bootId: 1n });
    const b = new WrapSession({ ...opts, role: 1, bootId: 2n });
    a.onCarrierUp(0);
    b.onCarrierUp(0);
    const id = a.openLocal(0, 22, target, 30_000)!;
    pump(a, b, 0);
    const sid = id;
    b.dialed(1, sid);
    pump(a, b, 1);
    // a → b: "hello " arrives and is drained (acknowledged); "world" is read but not yet sent.
    a.localData(2, id, Buffer.from('hello '));
    let ev = pump(a, b, 2);
    expect(delivered(ev.b)).toBe('hello ');
    b.drained(3, sid, 6);
    pump(a, b, 20);
    a.localData(21, id, Buffer.from('world'));
    // b → a: "abc" delivered to a and drained; "def" sent after a's carrier went.
    b.localData(21, sid, Buffer.from('abc'));
    ev = pump(a, b, 21);
    expect(delivered(ev.b)).toBe('world');
    expect(delivered(ev.a)).toBe('abc');
    a.drained(22, id, 3);
    // a stops for a restart: the carrier goes (the peer holds), b keeps writing.
    a.onCarrierDown(30);
    b.onCarrierDown(30);
    b.localData(31, sid, Buffer.from('def'));
    const state = decodeHandover(
      encodeHandover({ bootId: 1n, peers: [a.exportHandover(40, 'b', (c) => ({ fd: 0, received: c.recv.received }))] }),
    );
    expect(state.peers[0].conns[0]).toMatchObject({ id, received: 3, sendBytes: new Uint8Array(Buffer.from('world')) });

    const a2 = new WrapSession({ ...opts, role: 0, bootId: state.bootId });
    expect([...a2.importHandover(1000, state.peers[0])]).toEqual([id]);
    expect(a2.conns.get(id)?.holdUntil).toBeGreaterThan(1000);
    // A new connection of a2 never reuses a handed-over id.
    const fresh = a2.openLocal(1000, 22, target, 30_000)!;
    expect(fresh).not.toBe(id);
    a2.onCarrierUp(1001);
    b.onCarrierUp(1001);
    ev = pump(a2, b, 1001);
    expect(ev.b.some((e) => e.type === 'peer-restarted' || e.type === 'close')).toBe(false);
    expect(ev.b.some((e) => e.type === 'resumed' && e.conn === sid)).toBe(true);
    // "world" was delivered before the restart: b does not get it again; a2 gets "def" once.
    expect(delivered(ev.b)).toBe('');
    expect(delivered(ev.a)).toBe('def');
    // The streams go on after the restart.
    a2.localData(1002, id, Buffer.from('!'));
    expect(delivered(pump(a2, b, 1002).b)).toBe('!');
    expect(a2.conns.get(id)?.holdUntil).toBeUndefined();
  });

  it('bytes a socket had not taken when the process stopped are resent to the next one, once', () => {
    const a = new WrapSession({ ...opts, role: 0, bootId: 1n });
    const b = new WrapSession({ ...opts, role: 1, bootId: 2n });
    a.onCarrierUp(0);
    b.onCarrierUp(0);
    const id = a.openLocal(0, 22, target, 30_000)!;
    pump(a, b, 0);
    b.dialed(1, id);
    pump(a, b, 1);
    b.localData(2, id, Buffer.from('abcdef'));
    expect(delivered(pump(a, b, 2).a)).toBe('abcdef');
    a.drained(3, id, 1); // 'a' written; 'b' and 'c' in the kernel; 'def' still queued in the process
    a.onCarrierDown(4);
    b.onCarrierDown(4);
    const h = a.exportHandover(5, 'b', () => ({ fd: 0, received: 3 }));
    expect(h.conns[0].received).toBe(3);
    // Outside [drained, received]: not handed over.
    expect(a.exportHandover(5, 'b', () => ({ fd: 0, received: 0 })).conns).toEqual([]);
    expect(a.exportHandover(5, 'b', () => ({ fd: 0, received: 7 })).conns).toEqual([]);
    const a2 = new WrapSession({ ...opts, role: 0, bootId: 1n });
    a2.importHandover(6, h);
    a2.onCarrierUp(7);
    b.onCarrierUp(7);
    const ev = pump(a2, b, 7);
    expect(delivered(ev.a)).toBe('def');
    expect(ev.b.some((e) => e.type === 'close')).toBe(false);
  });

  it('a handover of another bootId is a restart for the peer: it resets', () => {
    const a = new WrapSession({ ...opts, role: 0, bootId: 1n });
    const b = new WrapSession({ ...opts, role: 1, bootId: 2n });
    a.onCarrierUp(0);
    b.onCarrierUp(0);
    const id = a.openLocal(0, 22, target, 30_000)!;
    pump(a, b, 0);
    b.dialed(1, id);
    pump(a, b, 1);
    a.onCarrierDown(2);
    b.onCarrierDown(2);
    const h = a.exportHandover(3, 'b', (c) => ({ fd: 0, received: c.recv.received }));
    const a2 = new WrapSession({ ...opts, role: 0, bootId: 3n }); // a fresh bootId: nothing can be resumed
    a2.importHandover(4, h);
    a2.onCarrierUp(5);
    b.onCarrierUp(5);
    const ev = pump(a2, b, 5);
    expect(ev.b.some((e) => e.type === 'peer-restarted')).toBe(true);
    expect(ev.b.some((e) => e.type === 'close' && e.conn === id)).toBe(true);
  });

  it('leaves out connections over its limits', () => {
    const a = new WrapSession({ ...opts, role: 0, bootId: 1n, maxConnections: 1 });
    const taken = a.importHandover(0, sample.peers[0]);
    expect(taken.size).toBe(1);
  });
});

describe('wrap simulation with restarts through a handover', () => {
  it('1,000 seeds: half the cuts restart a side; every stream is delivered exactly, in order, or both ends close at the hold', () => {
    let restarts = 0;
    let completed = 0;
    for (let seed = 1; seed <= 1000; seed++) {
      const r = runWrapSim({ ...DEFAULT_WRAP_SIM, seed, restarts: true, cutChance: 0.01, outageMs: [10, 1_500] });
      expect(r.failure, `seed ${seed}`).toBeUndefined();
      restarts += r.restarts;
      completed += r.completed;
    }
    expect(restarts).toBeGreaterThan(300);
    expect(completed).toBeGreaterThan(2000);
  }, 120_000);
});
