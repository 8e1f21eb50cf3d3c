/**
 * The WRAP session's send queue (core/wrap/session.ts): only connections with something to send
 * are visited for the next record, so a record costs the same with one connection or a thousand
 * idle ones (before, every record and every flush scanned every connection: 1,000 idle
 * connections made a busy one's requests cost 3.4x the CPU). The queue and the per-peer in-flight
 * total are kept incrementally; the wrap simulator and the fuzz test audit both against a scan.
 */
import { describe, expect, it } from 'vitest';
import { CloseCode, decodeRecord, encodeRecord, MAX_DATA, RecordType, type WrapRecord } from '../wire/wrap.js';
import { DELTA_TAIL_MS, WrapSession } from '../core/wrap/session.js';

const W = 64 * 1024;
const target = { family: 4 as const, address: '10.0.0.2', port: 22 };

/** A client-side session with its carrier up and the peer's HELLO in: `buffer` is the peer's quota for all our connections. */
function up(buffer: number, maxConnections = 8, window = W, udpIdleMs?: number): WrapSession {
  const a = new WrapSession({ windowBytes: window, maxConnections, pingMs: 1000, silenceMs: 3000, role: 0, bootId: 1n, udpIdleMs });
  a.onCarrierUp(0);
  a.handleRecord(0, encodeRecord({ type: RecordType.Hello, version: 1, bootId: 2n, window, buffer }));
  return a;
}

/** Every record the session has to send now, decoded. */
function drain(a: WrapSession): WrapRecord[] {
  const out: WrapRecord[] = [];
  for (let r = a.pollRecord(0); r; r = a.pollRecord(0)) out.push(decodeRecord(Buffer.concat(r)));
  return out;
}

const dataOf = (recs: WrapRecord[], conn: number): number =>
  recs.reduce((n, r) => n + (r.type === RecordType.Data && r.conn === conn ? r.data.length : 0), 0);

describe('the WRAP send queue', () => {
  it("a connection reset with bytes in flight gives its share of the peer's quota back: the next connection sends", () => {
    const a = up(W); // the peer holds at most one window for all our connections
    const c1 = a.openLocal(0, 22, target, 30_000)!;
    a.localData(0, c1, new Uint8Array(W));
    expect(dataOf(drain(a), c1)).toBe(W);
    const c2 = a.openLocal(0, 22, target, 30_000)!;
    a.localData(0, c2, new Uint8Array(1000));
    expect(dataOf(drain(a), c2)).toBe(0); // the quota is in flight for c1
    expect(a.audit()).toBeUndefined();
    a.handleRecord(0, encodeRecord({ type: RecordType.Close, conn: c1, code: CloseCode.ServerReset, text: 'reset' }));
    expect(dataOf(drain(a), c2)).toBe(1000);
    expect(a.audit()).toBeUndefined();
  });

  it('an acknowledgement of one connection lets another, blocked by the quota, send', () => {
    const a = up(W);
    const c1 = a.openLocal(0, 22, target, 30_000)!;
    a.localData(0, c1, new Uint8Array(W));
    drain(a);
    const c2 = a.openLocal(0, 22, target, 30_000)!;
    a.localData(0, c2, new Uint8Array(1000));
    expect(dataOf(drain(a), c2)).toBe(0);
    a.handleRecord(0, encodeRecord({ type: RecordType.Ack, conn: c1, offset: 4096 }));
    expect(dataOf(drain(a), c2)).toBe(1000);
    expect(a.audit()).toBeUndefined();
  });

  it('idle connections are not queued: with 1,000 open and one busy, only the busy one is visited', () => {
    const a = up(16 * W, 1_001);
    for (let i = 0; i < 1_000; i++) a.openLocal(0, 22, target, 30_000);
    drain(a); // their OPENs
    expect(a.queuedConns).toBe(0);
    const busy = a.openLocal(0, 22, target, 30_000)!;
    a.localData(0, busy, new Uint8Array(3 * 16 * 1024));
    expect(a.queuedConns).toBe(1);
    expect(dataOf(drain(a), busy)).toBe(3 * 16 * 1024);
    expect(a.queuedConns).toBe(0);
    a.localEnd(0, busy);
    expect(a.queuedConns).toBe(1); // its FIN
    expect(drain(a).filter((r) => r.type === RecordType.Fin)).toHaveLength(1);
    expect(a.queuedConns).toBe(0);
    expect(a.audit()).toBeUndefined();
  });

  it('connections with data take turns: each sends one record, then goes to the back', () => {
    const a = up(16 * MAX_DATA, 8, 4 * MAX_DATA);
    const ids = [0, 1, 2].map(() => a.openLocal(0, 22, target, 30_000)!);
    drain(a);
    for (const id of ids) a.localData(0, id, new Uint8Array(2 * MAX_DATA + 100)); // three records each
    const order = drain(a)
      .filter((r) => r.type === RecordType.Data)
      .map((r) => (r as { conn: number }).conn);
    expect(order).toEqual([...ids, ...ids, ...ids]);
  });

  it('UDP flows end idle, least recently active first; a datagram puts a flow at the back of the line', () => {
    const a = up(16 * W, 8, W, 100);
    const f1 = a.openLocal(0, 53, target, 30_000, false, true)!;
    const f2 = a.openLocal(10, 53, target, 30_000, false, true)!;
    const idle = a.openLocal(10, 22, target, 30_000)!; // a TCP connection: no idle timer
    a.localData(20, f1, new Uint8Array([0, 1, 7])); // one datagram: f1 active at 20
    drain(a);
    expect(a.deadlines()['flow-idle']).toBe(110); // f2's, the least recently active
    a.handleTimeout(110);
    const fins = (): number[] =>
      drain(a)
        .filter((r) => r.type === RecordType.Fin)
        .map((r) => (r as { conn: number }).conn);
    expect(fins()).toEqual([f2]);
    expect(a.deadlines()['flow-idle']).toBe(120);
    a.handleTimeout(119);
    expect(fins()).toEqual([]);
    a.handleTimeout(120);
    expect(fins()).toEqual([f1]);
    expect(a.deadlines()['flow-idle']).toBeUndefined();
    expect(a.conns.has(idle)).toBe(true);
    expect(a.audit()).toBeUndefined();
  });

  it("delta mode: a tail blocked by the peer's window arms no timer it could not act on (it spun, 1 ms apart, until an ACK)", () => {
    const a = new WrapSession({ windowBytes: W, maxConnections: 8, pingMs: 1000, silenceMs: 3000, role: 0, bootId: 1n });
    a.onCarrierUp(0);
    a.handleRecord(0, encodeRecord({ type: RecordType.Hello, version: 1, bootId: 2n, window: 1000, buffer: 16 * W }));
    const c = a.openLocal(0, 22, target, 30_000, true)!;
    const at = (now: number): WrapRecord[] => {
      const out: WrapRecord[] = [];
      for (let r = a.pollRecord(now); r; r = a.pollRecord(now)) out.push(decodeRecord(Buffer.concat(r)));
      return out;
    };
    at(0);
    a.localData(0, c, new Uint8Array(1500).fill(7)); // below the smallest chunk: all of it a tail
    expect(dataOf(at(0), c)).toBe(0); // held for the rest of its chunk
    expect(a.deadlines()['delta-tail']).toBe(DELTA_TAIL_MS);
    expect(dataOf(at(DELTA_TAIL_MS), c)).toBe(1000); // the wait is over: a window's worth
    expect(a.deadlines()['delta-tail']).toBeUndefined(); // blocked by the window: nothing to wake up for
    a.handleRecord(DELTA_TAIL_MS, encodeRecord({ type: RecordType.Ack, conn: c, offset: 1000 }));
    expect(a.deadlines()['delta-tail']).toBe(DELTA_TAIL_MS); // room again: the rest of the tail may go
    expect(dataOf(at(DELTA_TAIL_MS), c)).toBe(500);
    expect(a.audit()).toBeUndefined();
  });
});
