import { describe, expect, it } from 'vitest';
import { CloseCode, decodeRecord, encodeRecord, ipv6Bytes, OPEN_DELTA, RecordType, type WrapRecord } from '../wire/wrap.js';
import { CHUNK_MAX, CHUNK_MIN, Chunker } from '../core/wrap/dedup.js';
import { ACK_DELAY_MS, WrapSession, type WrapEvent } from '../core/wrap/session.js';
import { DEFAULT_WRAP_SIM, runWrapSim } from '../testing/sim/wrap.js';
import { DialPolicy, OwnAddresses, parseDestination } from '../drivers/wrap/policy.js';
import { HandshakeSlots } from '../core/wrap/admission.js';
import { carrierMac1 } from '../drivers/wrap/carrier.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../drivers/daemon/config.js';
import { encodeKey } from '../drivers/daemon/keys.js';
import { generateKeyPair } from '../crypto/primitives.js';

const opts = { windowBytes: 64 * 1024, maxConnections: 8, pingMs: 1000, silenceMs: 3000, mayDial: () => true };
const target = { family: 4 as const, address: '10.0.0.2', port: 22 };

/** Two sessions joined by a perfect carrier (records delivered at once, in order). */
function joined(): { a: WrapSession; b: WrapSession; pump: (now?: number) => { a: WrapEvent[]; b: WrapEvent[] } } {
  const a = new WrapSession({ ...opts, role: 0, bootId: 1n });
  const b = new WrapSession({ ...opts, role: 1, bootId: 2n });
  a.onCarrierUp(0);
  b.onCarrierUp(0);
  const pump = (now = 0): { a: WrapEvent[]; b: WrapEvent[] } => {
    const evs = { a: [] as WrapEvent[], b: [] as WrapEvent[] };
    for (let moved = true; moved;) {
      moved = false;
      for (let r = a.pollRecord(now); r; r = a.pollRecord(now), moved = true) b.handleRecord(now, Buffer.concat(r));
      for (let r = b.pollRecord(now); r; r = b.pollRecord(now), moved = true) a.handleRecord(now, Buffer.concat(r));
    }
    for (let e = a.pollEvent(); e; e = a.pollEvent()) evs.a.push(e);
    for (let e = b.pollEvent(); e; e = b.pollEvent()) evs.b.push(e);
    return evs;
  };
  return { a, b, pump };
}

describe('WRAP records', () => {
  const samples: WrapRecord[] = [
    { type: RecordType.Hello, version: 1, bootId: 0x0123456789abcdefn },
    { type: RecordType.Open, conn: 2, wrapPort: 22, target, holdMs: 30_000, flags: 0 },
    {
      type: RecordType.Open,
      conn: 3,
      wrapPort: 443,
      target: { family: 6, address: 'fd00:0:0:0:0:0:0:2', port: 443 },
      holdMs: 1,
      flags: OPEN_DELTA,
    },
    { type: RecordType.Ref, conn: 2, offset: 8192, length: 4000, digest: new Uint8Array(16).fill(9) },
    { type: RecordType.Nack, conn: 2, offset: 8192 },
    { type: RecordType.Opened, conn: 7 },
    { type: RecordType.Data, conn: 2, offset: 2 ** 40 + 5, data: new Uint8Array([1, 2, 3]) },
    { type: RecordType.Ack, conn: 2, offset: 123_456 },
    { type: RecordType.Fin, conn: 2, offset: 0 },
    { type: RecordType.Resume, conn: 9, offset: 2 ** 52 },
    { type: RecordType.Close, conn: 2, code: CloseCode.HoldExpired, text: 'link down' },
    { type: RecordType.Ping },
    { type: RecordType.Pong },
    { type: RecordType.Hello, version: 1, bootId: 1n, window: 0xffffffff, buffer: 65536 },
  ];
  it('round-trips every record type', () => {
    for (const r of samples) expect(decodeRecord(encodeRecord(r))).toEqual(r);
  });
  it('names the field of a truncated record and refuses trailing bytes', () => {
    const open = encodeRecord(samples[1]);
    expect(() => decodeRecord(open.subarray(0, 8))).toThrow(/open\.(family|address)/);
    expect(() => decodeRecord(new Uint8Array([...encodeRecord(samples[5]), 0]))).toThrow(/record type 3/);
    expect(() => decodeRecord(encodeRecord({ type: RecordType.Ref, conn: 2, offset: 0, length: 0, digest: new Uint8Array(16) }))).toThrow(
      /ref\.length/,
    );
    expect(() => decodeRecord(new Uint8Array([99]))).toThrow(/unknown record type 99/);
  });
  it('parses IPv6 text forms', () => {
    expect([...ipv6Bytes('::1')]).toEqual([...new Array(15).fill(0), 1]);
    expect([...ipv6Bytes('fd00::2')].slice(0, 2)).toEqual([0xfd, 0]);
    expect([...ipv6Bytes('::ffff:10.0.0.2')].slice(10)).toEqual([0xff, 0xff, 10, 0, 0, 2]);
    expect(() => ipv6Bytes('1::2::3')).toThrow(/not an IPv6/);
  });
});

describe('carrier message 1 (§16.2)', () => {
  it('mac1 matches the vector computed from the spec (test/vectors/wrap-carrier-mac1.py)', () => {
    const spub = Buffer.from('31e0303fd6418d2f8c0e78b91f22e8caed0fbe48656dcf4767e4834f701b8f62', 'hex');
    const m1 = Uint8Array.from({ length: 96 }, (_, i) => i);
    expect(Buffer.from(carrierMac1(spub, m1)).toString('hex')).toBe('f2f5d19619b9f82005c1932424e6fefe');
    expect(
      Buffer.from(
        carrierMac1(
          spub,
          m1.map((x, i) => (i === 95 ? x ^ 1 : x)),
        ),
      ).toString('hex'),
    ).not.toBe('f2f5d19619b9f82005c1932424e6fefe');
  });
});

describe('WrapSession', () => {
  it('opens, carries bytes both ways, half-closes and completes', () => {
    const { a, b, pump } = joined();
    const id = a.openLocal(0, 22, target, 30_000)!;
    let ev = pump();
    expect(ev.b[0]).toMatchObject({ type: 'dial', conn: id, target });
    b.dialed(0, id);
    a.localData(0, id, new TextEncoder().encode('hello'));
    a.localEnd(0, id);
    ev = pump();
    const got = ev.b.filter((e) => e.type === 'deliver').map((e) => (e as { data: Uint8Array }).data);
    expect(Buffer.concat(got).toString()).toBe('hello');
    expect(ev.b.some((e) => e.type === 'end')).toBe(true);
    b.drained(0, id, 5);
    b.localData(0, id, new TextEncoder().encode('world'));
    b.localEnd(0, id);
    ev = pump();
    // b's FIN took b's pending ACK along (§16.5.3): a completes as soon as it drained b's bytes,
    // and its last ACK leaves at once.
    a.drained(0, id, 5);
    expect(a.conns.size).toBe(0);
    ev = pump(0);
    expect(ev.a.some((e) => e.type === 'done')).toBe(true);
    expect(ev.b.some((e) => e.type === 'done')).toBe(true);
    expect(a.conns.size + b.conns.size).toBe(0);
  });

  it('completes when the last FIN follows data acknowledged long before (no connection left behind)', () => {
    const { a, b, pump } = joined();
    const id = a.openLocal(0, 5683, target, 30_000)!;
    pump();
    b.dialed(0, id);
    b.localData(0, id, new Uint8Array(10)); // the server's answer, drained and acknowledged
    pump();
    a.drained(0, id, 10);
    pump(ACK_DELAY_MS);
    a.localEnd(ACK_DELAY_MS, id); // the client side ends (an idle UDP flow)
    const ev = pump(ACK_DELAY_MS);
    expect(ev.b).toContainEqual({ type: 'end', conn: id });
    b.localEnd(ACK_DELAY_MS, id); // the server side follows: its FIN alone completes it
    const done = pump(2 * ACK_DELAY_MS);
    expect(done.a).toContainEqual({ type: 'done', conn: id });
    expect(done.b).toContainEqual({ type: 'done', conn: id });
    expect(a.conns.size + b.conns.size).toBe(0);
    expect(a.localData(2 * ACK_DELAY_MS, id, new Uint8Array(1))).toBe(false); // never throws after the end
  });

  it('pauses the reader when the window is full and resumes when the peer drains (backpressure)', () => {
    const { a, b, pump } = joined();
    const id = a.openLocal(0, 22, target, 30_000)!;
    pump();
    b.dialed(0, id);
    const chunk = new Uint8Array(16 * 1024);
    let reads = 0;
    while (a.localData(0, id, chunk)) reads++;
    expect(reads * chunk.length).toBeLessThan(opts.windowBytes);
    expect(a.conns.get(id)!.send.buffered).toBeLessThanOrEqual(opts.windowBytes);
    const ev = pump();
    const delivered = ev.b.filter((e) => e.type === 'deliver').reduce((n, e) => n + (e as { data: Uint8Array }).data.length, 0);
    expect(delivered).toBe(a.conns.get(id)!.send.buffered);
    // Nothing drained yet: still paused. Draining sends an ACK that reopens the window.
    expect(pump().a.some((e) => e.type === 'writable')).toBe(false);
    b.drained(0, id, delivered);
    expect(pump().a).toContainEqual({ type: 'writable', conn: id });
    expect(a.conns.get(id)!.send.buffered).toBe(0);
  });

  it('resends only what the peer is missing after the carrier is lost, then resumes', () => {
    const { a, b, pump } = joined();
    const id = a.openLocal(0, 22, target, 30_000)!;
    pump();
    b.dialed(0, id);
    a.localData(0, id, new Uint8Array(1000).fill(7));
    pump();
    // In flight when the carrier breaks: these bytes never arrive.
    a.localData(0, id, new Uint8Array(500).fill(8));
    while (a.pollRecord(1)) {
      /* lost */
    }
    a.onCarrierDown(2);
    b.onCarrierDown(2);
    const held = [a.pollEvent(), b.pollEvent()];
    expect(held.map((e) => e?.type)).toEqual(['held', 'held']);
    a.onCarrierUp(1000);
    b.onCarrierUp(1000);
    const ev = pump(1000);
    const resent = ev.b.filter((e) => e.type === 'deliver').map((e) => (e as { data: Uint8Array }).data);
    expect(Buffer.concat(resent)).toEqual(Buffer.alloc(500, 8)); // not the 1000 already received
    expect(ev.a).toContainEqual({ type: 'resumed', conn: id, heldMs: 998 });
  });

  it('acknowledges again after a carrier loss: a lost ACK never leaves a full window stuck', () => {
    const { a, b, pump } = joined();
    const id = a.openLocal(0, 22, target, 30_000)!;
    pump();
    b.dialed(0, id);
    while (a.localData(0, id, new Uint8Array(16 * 1024))) {
      /* fill the window */
    }
    const delivered = pump()
      .b.filter((e) => e.type === 'deliver')
      .reduce((n, e) => n + (e as { data: Uint8Array }).data.length, 0);
    b.drained(0, id, delivered);
    // The ACK goes onto b's carrier, which dies before delivering it.
    while (b.pollRecord(5)) {
      /* lost */
    }
    a.onCarrierDown(5);
    b.onCarrierDown(5);
    a.onCarrierUp(10);
    b.onCarrierUp(10);
    expect(pump(10).a).toContainEqual({ type: 'writable', conn: id });
  });

  it('closes both ends with hold-expired when the carrier stays down past the hold', () => {
    const { a, b, pump } = joined();
    const id = a.openLocal(0, 22, target, 5_000)!;
    pump();
    b.dialed(0, id);
    pump();
    a.onCarrierDown(10);
    b.onCarrierDown(10);
    a.handleTimeout(a.pollTimeout()!);
    b.handleTimeout(b.pollTimeout()!);
    const evs = [...[a.pollEvent(), a.pollEvent()], ...[b.pollEvent(), b.pollEvent()]];
    expect(evs.filter((e) => e?.type === 'close').map((e) => (e as { code: CloseCode }).code)).toEqual([
      CloseCode.HoldExpired,
      CloseCode.HoldExpired,
    ]);
    expect(a.pollTimeout()).toBeUndefined();
  });

  it('closes with peer-restarted when the peer comes back with another boot id', () => {
    const { a, b, pump } = joined();
    const id = a.openLocal(0, 22, target, 30_000)!;
    pump();
    b.dialed(0, id);
    pump();
    a.onCarrierDown(1);
    const b2 = new WrapSession({ ...opts, role: 1, bootId: 3n });
    a.onCarrierUp(2);
    b2.onCarrierUp(2);
    for (let r = b2.pollRecord(2); r; r = b2.pollRecord(2)) a.handleRecord(2, Buffer.concat(r));
    const evs: WrapEvent[] = [];
    for (let e = a.pollEvent(); e; e = a.pollEvent()) evs.push(e);
    expect(evs).toContainEqual(expect.objectContaining({ type: 'close', conn: id, code: CloseCode.PeerRestarted }));
    void b;
  });

  it('forgets the ended connection ids of a restarted peer: its new connections reuse them', () => {
    const { a, b, pump } = joined();
    const id = b.openLocal(0, 22, target, 30_000)!; // opened by b: b's ids restart after a restart
    pump();
    a.dialed(0, id);
    pump();
    // b restarts while the connection is live: a closes it (peer-restarted), and b's first
    // new connection takes the same id again.
    a.onCarrierDown(1);
    const b2 = new WrapSession({ ...opts, role: 1, bootId: 9n });
    a.onCarrierUp(2);
    b2.onCarrierUp(2);
    expect(b2.openLocal(2, 22, target, 30_000)).toBe(id);
    const evs: WrapEvent[] = [];
    for (let moved = true; moved;) {
      moved = false;
      for (let r = b2.pollRecord(2); r; r = b2.pollRecord(2), moved = true) a.handleRecord(2, Buffer.concat(r));
      for (let r = a.pollRecord(2); r; r = a.pollRecord(2), moved = true) b2.handleRecord(2, Buffer.concat(r));
    }
    for (let e = a.pollEvent(); e; e = a.pollEvent()) evs.push(e);
    expect(evs).toContainEqual(expect.objectContaining({ type: 'close', conn: id, code: CloseCode.PeerRestarted }));
    expect(evs).toContainEqual(expect.objectContaining({ type: 'dial', conn: id }));
  });

  it('an OPEN for a live id is a resend only as the first record about it on a carrier, naming the same destination; otherwise that connection is reset', () => {
    // b serves connection 2 (a's), which has carried bytes; what the peer then sends, by carrier.
    const served = (): { b: WrapSession; id: number } => {
      const { a, b, pump } = joined();
      const id = a.openLocal(0, 22, target, 30_000)!;
      pump();
      b.dialed(0, id);
      a.localData(0, id, new TextEncoder().encode('old'));
      pump();
      b.onCarrierDown(1);
      b.onCarrierUp(2);
      b.handleRecord(2, encodeRecord({ type: RecordType.Hello, version: 1, bootId: 1n }));
      while (b.pollEvent());
      return { b, id };
    };
    const open = (id: number, t = target): Uint8Array =>
      encodeRecord({ type: RecordType.Open, conn: id, wrapPort: 22, target: t, holdMs: 30_000, flags: 0 });
    const after = (b: WrapSession, ...recs: Uint8Array[]): { evs: WrapEvent[]; sent: WrapRecord[] } => {
      for (const r of recs) b.handleRecord(3, r);
      const evs: WrapEvent[] = [];
      for (let e = b.pollEvent(); e; e = b.pollEvent()) evs.push(e);
      const sent: WrapRecord[] = [];
      for (let r = b.pollRecord(3); r; r = b.pollRecord(3)) sent.push(decodeRecord(Buffer.concat(r)));
      return { evs, sent };
    };
    const reset = (id: number) => expect.objectContaining({ type: 'close', conn: id, code: CloseCode.ProtocolError });

    // Honest: the resent OPEN comes first on the new carrier, ahead of the peer's RESUME.
    let { b, id } = served();
    let r = after(b, open(id), encodeRecord({ type: RecordType.Resume, conn: id, offset: 0 }));
    expect(r.evs.filter((e) => e.type === 'violation' || e.type === 'close')).toEqual([]);
    expect(r.sent).toContainEqual({ type: RecordType.Opened, conn: id });
    // A second OPEN on that carrier is another connection.
    r = after(b, open(id));
    expect(r.evs).toContainEqual(reset(id));
    expect(r.evs).toContainEqual(expect.objectContaining({ type: 'violation', kind: 'open' }));
    expect(r.sent).toContainEqual(expect.objectContaining({ type: RecordType.Close, conn: id, code: CloseCode.ProtocolError }));
    expect(b.conns.has(id)).toBe(false);

    // After the peer's RESUME for it (a wrapped counter's new connection): reset, nothing delivered.
    ({ b, id } = served());
    r = after(
      b,
      encodeRecord({ type: RecordType.Resume, conn: id, offset: 0 }),
      open(id),
      encodeRecord({ type: RecordType.Data, conn: id, offset: 0, data: new TextEncoder().encode('new-secret') }),
    );
    expect(r.evs).toContainEqual(reset(id));
    expect(r.evs.filter((e) => e.type === 'deliver' || e.type === 'dial')).toEqual([]);

    // Another destination, even first on the carrier: reset.
    ({ b, id } = served());
    r = after(b, open(id, { ...target, port: 23 }));
    expect(r.evs).toContainEqual(reset(id));
  });

  it('queues one PING per interval while the carrier cannot be written, and keeps no deadline in the past', () => {
    const a = new WrapSession({ ...opts, role: 0, bootId: 1n });
    a.onCarrierUp(0);
    a.handleRecord(0, encodeRecord({ type: RecordType.Hello, version: 1, bootId: 5n }));
    // Nobody polls records (the carrier socket is full); time passes.
    for (let now = 1000; now < 2000; now += 10) {
      const t = a.pollTimeout()!;
      if (t <= now) a.handleTimeout(now);
      expect(a.pollTimeout()!).toBeGreaterThan(now);
    }
    let pings = 0;
    for (let r = a.pollRecord(2000); r; r = a.pollRecord(2000)) if (Buffer.concat(r)[0] === RecordType.Ping) pings++;
    expect(pings).toBe(1);
  });

  it('drops the carrier on a HELLO of another version', () => {
    const a = new WrapSession({ ...opts, role: 0, bootId: 1n });
    a.onCarrierUp(0);
    a.handleRecord(0, encodeRecord({ type: RecordType.Hello, version: 2, bootId: 5n }));
    const evs: WrapEvent[] = [];
    for (let e = a.pollEvent(); e; e = a.pollEvent()) evs.push(e);
    expect(evs.map((e) => e.type)).toEqual(['violation', 'drop-carrier']);
    expect(a.carrierUp).toBe(false);
  });

  it("counts a violation for records before hello and for an OPEN with this side's parity", () => {
    const a = new WrapSession({ ...opts, role: 0, bootId: 1n });
    a.onCarrierUp(0);
    a.handleRecord(0, encodeRecord({ type: RecordType.Ping }));
    a.handleRecord(0, encodeRecord({ type: RecordType.Hello, version: 1, bootId: 5n }));
    a.handleRecord(0, encodeRecord({ type: RecordType.Open, conn: 4, wrapPort: 22, target, holdMs: 1, flags: 0 }));
    a.handleRecord(0, new Uint8Array([4, 0]));
    expect(a.counters.violations).toBe(3);
    const kinds: string[] = [];
    for (let e = a.pollEvent(); e; e = a.pollEvent()) if (e.type === 'violation') kinds.push(e.kind);
    expect(kinds).toEqual(['before-hello', 'parity', 'undecodable']);
    expect(a.conns.size).toBe(0);
  });

  it('window violation: DATA past the advertised receive window resets that connection and is counted; the others go on', () => {
    const { a, b, pump } = joined();
    const x = a.openLocal(0, 22, target, 1000)!;
    const y = a.openLocal(0, 22, target, 1000)!;
    pump();
    b.dialed(0, x);
    b.dialed(0, y);
    pump();
    // An honest sender stops at the window (64 KiB here) even when more was read.
    a.localData(0, x, new Uint8Array(100 * 1024));
    const delivered = pump()
      .b.filter((e) => e.type === 'deliver')
      .reduce((n, e) => n + (e as { data: Uint8Array }).data.length, 0);
    expect(delivered).toBe(64 * 1024);
    expect(b.counters.windowViolations).toBe(0);
    expect(b.bufferedIn).toBe(64 * 1024);
    // A hostile one sends past it: the connection is reset, its bytes leave the quota.
    b.handleRecord(0, encodeRecord({ type: RecordType.Data, conn: y, offset: 0, data: new Uint8Array(64 * 1024 + 1) }));
    expect(b.counters.windowViolations).toBe(1);
    expect(b.conns.has(y)).toBe(false);
    expect(b.conns.has(x)).toBe(true);
    expect(b.bufferedIn).toBe(64 * 1024);
    const evs = pump();
    expect(evs.a).toContainEqual(expect.objectContaining({ type: 'close', conn: y, code: CloseCode.ProtocolError }));
    // x carries on once drained.
    b.drained(10, x, 64 * 1024);
    b.handleTimeout(20);
    const more = pump(20)
      .b.filter((e) => e.type === 'deliver' && e.conn === x)
      .reduce((n, e) => n + (e as { data: Uint8Array }).data.length, 0);
    expect(more).toBe(36 * 1024);
  });

  it('per-peer quota: reading pauses every connection when the quota is full, and wakes them as it frees', () => {
    const a = new WrapSession({ ...opts, maxBufferedBytes: 128 * 1024, role: 0, bootId: 1n });
    const ids = [0, 1, 2].map(() => a.openLocal(0, 22, target, 1000)!);
    expect(a.localData(0, ids[0], new Uint8Array(64 * 1024))).toBe(false); // its own window
    expect(a.localData(0, ids[1], new Uint8Array(60 * 1024))).toBe(true);
    expect(a.localData(0, ids[2], new Uint8Array(10 * 1024))).toBe(false); // the quota: all pause
    expect(a.bufferedOut).toBe(134 * 1024);
    expect(a.pollEvent()).toEqual({ type: 'pause-all' });
    expect(a.room(ids[2])).toBe(0);
  });

  it('a stalled carrier under honest small-record streams: ACKs coalesce (one per connection), the backlog never pauses reading, no violation', () => {
    const N = 64;
    const opts = { windowBytes: 4 * 1024 * 1024, maxConnections: N, pingMs: 1000, silenceMs: 3000, mayDial: () => true };
    const target = { family: 4 as const, address: '10.0.0.2', port: 22 };
    const a = new WrapSession({ ...opts, role: 0, bootId: 1n });
    const b = new WrapSession({ ...opts, role: 1, bootId: 2n });
    a.onCarrierUp(0);
    b.onCarrierUp(0);
    const delivered = new Map<number, number[]>();
    const events: WrapEvent[] = [];
    const pump = (): void => {
      for (let moved = true; moved;) {
        moved = false;
        for (let r = a.pollRecord(0); r; r = a.pollRecord(0), moved = true) b.handleRecord(0, Buffer.concat(r));
        for (let r = b.pollRecord(0); r; r = b.pollRecord(0), moved = true) a.handleRecord(0, Buffer.concat(r));
      }
      for (let e = a.pollEvent(); e; e = a.pollEvent()) {
        if (e.type === 'dial') a.dialed(0, e.conn);
        else if (e.type === 'deliver') (delivered.get(e.conn) ?? delivered.set(e.conn, []).get(e.conn)!).push(e.data.length);
        else events.push(e);
      }
      while (b.pollEvent());
    };
    pump();
    const ids = Array.from({ length: N }, () => b.openLocal(0, 22, target, 30_000)!);
    pump();
    a.handleTimeout(ACK_DELAY_MS); // the delayed OPENEDs (a sends no bytes of its own)
    pump();
    for (let k = 0; k < 300; k++) {
      for (const id of ids) b.localData(0, id, new Uint8Array(100));
      pump();
    }
    // The carrier stalls for 2 s (nothing polled) while a's local clients keep draining a record every ms.
    let most = 0;
    for (let t = 1; t < 2_000; t++) {
      for (const [conn, q] of delivered) {
        const n = q.shift();
        if (n !== undefined) a.drained(t, conn, n);
      }
      a.handleTimeout(t);
      most = Math.max(most, a.controlQueued);
      for (let e = a.pollEvent(); e; e = a.pollEvent()) events.push(e);
    }
    expect(a.carrierUp).toBe(true);
    expect(a.backlogged).toBe(false);
    expect(most).toBeLessThanOrEqual(N + 1); // one ACK per connection (and a PING), however long the stall
    expect(a.counters.violations).toBe(0);
    expect(events.filter((e) => e.type === 'violation' || e.type === 'drop-carrier')).toEqual([]);
    // Once the carrier moves again, the ACKs carry the latest offsets: b's windows are all released.
    pump();
    expect(b.bufferedOut).toBe(0);
  });

  it('control flood from a peer that never reads the carrier (PINGs, DATA and OPENs for unknown ids, HELLOs): one PONG, one answer per id, a bounded queue', () => {
    const a = new WrapSession({ ...opts, role: 1, bootId: 1n, mayDial: () => false });
    a.onCarrierUp(0);
    a.handleRecord(0, encodeRecord({ type: RecordType.Hello, version: 1, bootId: 5n }));
    expect(a.pollRecord(0)).toBeDefined(); // our HELLO
    const ping = encodeRecord({ type: RecordType.Ping });
    const data = (conn: number): Uint8Array => encodeRecord({ type: RecordType.Data, conn, offset: 0, data: new Uint8Array(1) });
    const open = (conn: number): Uint8Array => encodeRecord({ type: RecordType.Open, conn, wrapPort: 22, target, holdMs: 1, flags: 0 });
    // Nobody polls records (the peer does not read). Repeats of one id are answered once.
    for (let i = 0; i < 1000; i++) {
      a.handleRecord(0, ping);
      a.handleRecord(0, data(7));
      a.handleRecord(0, open(8));
      a.handleRecord(0, encodeRecord({ type: RecordType.Hello, version: 1, bootId: 5n }));
    }
    expect(a.controlQueued).toBe(3); // PONG, CLOSE 7 (unknown), CLOSE 8 (refused)
    expect(a.counters.violations).toBe(1000); // the repeated HELLOs
    const types = [a.pollRecord(0), a.pollRecord(0), a.pollRecord(0)].map((r) => decodeRecord(Buffer.concat(r!)));
    expect(types).toEqual([
      { type: RecordType.Pong },
      expect.objectContaining({ type: RecordType.Close, conn: 7 }),
      expect.objectContaining({ type: RecordType.Close, code: CloseCode.Refused, conn: 8 }),
    ]);
    // Answered: the next one is answered again.
    a.handleRecord(0, data(7));
    expect(a.controlQueued).toBe(1);
    a.pollRecord(0);
    // Distinct ids: reading should pause at the limit (`backlogged`); an I/O layer that reads on is cut off at twice it.
    let pausedAt = 0;
    for (let i = 0; a.carrierUp && i < 1_000_000; i++) {
      a.handleRecord(0, data(2 * i + 11));
      if (!pausedAt && a.backlogged) pausedAt = a.controlQueued;
      expect(a.controlQueued).toBeLessThanOrEqual(2 * a.controlPause);
    }
    expect(pausedAt).toBe(a.controlPause);
    expect(a.carrierUp).toBe(false);
    const evs: WrapEvent[] = [];
    for (let e = a.pollEvent(); e; e = a.pollEvent()) evs.push(e);
    expect(evs.slice(-2).map((e) => e.type)).toEqual(['violation', 'drop-carrier']);
    expect(a.controlQueued).toBe(0);
  });

  it('named timers: a deadline per timer, pollTimeout the earliest; an idle UDP flow this side opened ends its stream', () => {
    const a = new WrapSession({ ...opts, udpIdleMs: 300, role: 0, bootId: 1n });
    const b = new WrapSession({ ...opts, udpIdleMs: 300, role: 1, bootId: 2n });
    a.onCarrierUp(0);
    b.onCarrierUp(0);
    const move = (now: number): WrapEvent[] => {
      for (let moved = true; moved;) {
        moved = false;
        for (let r = a.pollRecord(now); r; r = a.pollRecord(now), moved = true) b.handleRecord(now, Buffer.concat(r));
        for (let r = b.pollRecord(now); r; r = b.pollRecord(now), moved = true) a.handleRecord(now, Buffer.concat(r));
      }
      while (a.pollEvent());
      const evs: WrapEvent[] = [];
      for (let e = b.pollEvent(); e; e = b.pollEvent()) evs.push(e);
      return evs;
    };
    const id = a.openLocal(0, 5683, target, 30_000, false, true)!;
    move(0);
    b.dialed(0, id);
    expect(b.deadlines().coalesce).toBe(ACK_DELAY_MS); // OPENED waits for the flow's first reply, at most this
    b.handleTimeout(ACK_DELAY_MS);
    expect(a.localDatagram(10, id, new Uint8Array(70_000))).toBe('too-big');
    expect(a.localDatagram(10, id, new Uint8Array(5))).toBeUndefined();
    expect(move(10)).toContainEqual({ type: 'deliver', conn: id, data: new Uint8Array([0, 5, 0, 0, 0, 0, 0]) });
    const d = a.deadlines();
    expect(d).toEqual({
      silence: 10 + opts.silenceMs,
      ping: 10 + opts.pingMs,
      ack: undefined,
      hold: undefined,
      'flow-idle': 310,
      'delta-tail': undefined,
      coalesce: undefined,
    });
    expect(a.pollTimeout()).toBe(310);
    expect(b.deadlines()['flow-idle']).toBeUndefined(); // the side that opened the flow ends it
    a.handleTimeout(309);
    expect(move(309)).toEqual([]);
    a.handleTimeout(310);
    expect(move(310)).toContainEqual({ type: 'end', conn: id });
    expect(a.deadlines()['flow-idle']).toBeUndefined();
    expect(a.localDatagram(311, id, new Uint8Array(5))).toBe('flow-ended');
  });

  it('refuses connections over the limit', () => {
    const a = new WrapSession({ ...opts, maxConnections: 2, role: 0, bootId: 1n });
    expect(a.openLocal(0, 22, target, 1)).toBeDefined();
    expect(a.openLocal(0, 22, target, 1)).toBeDefined();
    expect(a.openLocal(0, 22, target, 1)).toBeUndefined();
  });
});

describe('carrier admission (§16.2)', () => {
  it('handshake slots: at most max in all and maxPerSource per source address, freed as connections are adopted', () => {
    const slots = new HandshakeSlots(3, 2);
    slots.take('a');
    slots.take('a');
    expect(slots.full('a')).toBe('too-many-from-source');
    expect(slots.full('b')).toBeUndefined();
    slots.take('b');
    expect(slots.full('c')).toBe('too-many-handshakes');
    slots.release('a');
    expect(slots.full('a')).toBeUndefined();
    expect(slots.held).toBe(2);
  });
});

describe('dial policy (default deny)', () => {
  const t = (address: string, port: number, family: 4 | 6 = 4): { family: 4 | 6; address: string; port: number } => ({
    family,
    address,
    port,
  });

  it('parses addresses, prefixes, port ranges and *, and refuses the rest', () => {
    expect(parseDestination('10.0.0.5:22')).toMatchObject({ lo: 22, hi: 22, net: { prefix: 32 } });
    expect(parseDestination('[fd00::/64]:8000-8100')).toMatchObject({ lo: 8000, hi: 8100, net: { prefix: 64 } });
    expect(parseDestination('*:443')).toMatchObject({ net: undefined, lo: 443, hi: 443 });
    for (const bad of [
      '10.0.0.5',
      '10.0.0.5:0',
      '10.0.0.5:70000',
      '10.0.0.5:9-8',
      '10.0.0.0/33:1',
      'host.example:22',
      'fd00::1:22',
      '[fd00::/129]:1',
    ]) {
      expect(() => parseDestination(bad), bad).toThrow(RangeError);
    }
  });

  it('allows only what a rule of that peer (or *) names, per protocol, and counts refusals per peer', () => {
    const p = new DialPolicy([
      { peer: 'a', to: '10.0.0.0/24:22', protocol: 'tcp' },
      { peer: 'a', to: '[fd00::/16]:5000-5010', protocol: 'udp' },
      { peer: '*', to: '192.168.1.1:443', protocol: 'tcp' },
    ]);
    expect(p.allows('a', t('10.0.0.9', 22), 'tcp')).toBe(true);
    expect(p.allows('a', t('::ffff:10.0.0.9', 22, 6), 'tcp')).toBe(true); // v4-mapped is IPv4
    expect(p.allows('a', t('fd00:1::2', 5005, 6), 'udp')).toBe(true);
    expect(p.allows('b', t('192.168.1.1', 443), 'tcp')).toBe(true);
    expect(p.allows('a', t('10.0.1.9', 22), 'tcp')).toBe(false); // outside the prefix
    expect(p.allows('a', t('10.0.0.9', 23), 'tcp')).toBe(false); // another port
    expect(p.allows('a', t('10.0.0.9', 22), 'udp')).toBe(false); // another protocol
    expect(p.allows('a', t('127.0.0.1', 22), 'tcp')).toBe(false); // loopback is never implied
    expect(p.allows('b', t('10.0.0.9', 22), 'tcp')).toBe(false); // another peer's rule
    expect(p.allows('a', t('0:0:0:0:0:0:0:0', 22, 6), 'tcp')).toBe(false);
    expect(p.toJSON(['a', 'b']).map((x) => x.refused)).toEqual([5, 1]);
    expect(new DialPolicy([]).allows('a', t('10.0.0.9', 22), 'tcp')).toBe(false);
  });

  it('attack: a `*` rule does not reach this host: loopback only when a rule names it, unspecified addresses never', () => {
    const p = new DialPolicy([
      { peer: 'a', to: '*:22', protocol: 'tcp' },
      { peer: 'a', to: '127.0.0.1:5432', protocol: 'tcp' },
      { peer: 'a', to: '0.0.0.0/0:80', protocol: 'tcp' },
    ]);
    expect(p.allows('a', t('10.1.2.3', 22), 'tcp')).toBe(true);
    expect(p.allows('a', t('fd00::5', 22, 6), 'tcp')).toBe(true);
    expect(p.allows('a', t('127.0.0.1', 22), 'tcp')).toBe(false); // `*` excludes loopback
    expect(p.allows('a', t('::1', 22, 6), 'tcp')).toBe(false);
    expect(p.allows('a', t('::ffff:127.0.0.2', 22, 6), 'tcp')).toBe(false);
    expect(p.allows('a', t('0.0.0.0', 22), 'tcp')).toBe(false); // unspecified reaches this host
    expect(p.allows('a', t('::', 22, 6), 'tcp')).toBe(false);
    expect(p.allows('a', t('127.0.0.1', 5432), 'tcp')).toBe(true); // named: allowed
    expect(p.allows('a', t('127.0.0.1', 80), 'tcp')).toBe(true); // inside a prefix that holds it: named
    expect(p.allows('a', t('0.0.0.0', 80), 'tcp')).toBe(false); // never, whatever the rule
  });

  it("attack: `*` reaches none of this host's interface addresses (read again as they change) nor multicast; a rule naming one does", () => {
    let now = 0;
    let addrs = ['192.0.2.7', 'fd00::7', 'fe80::7%eth0', '127.0.0.1'];
    let reads = 0;
    const own = new OwnAddresses(
      () => (reads++, addrs),
      () => now,
    );
    const p = new DialPolicy(
      [
        { peer: 'a', to: '*:22', protocol: 'tcp' },
        { peer: 'a', to: '*:5353', protocol: 'udp' },
        { peer: 'a', to: '192.0.2.7:8080', protocol: 'tcp' },
        { peer: 'a', to: '[ff02::fb]:5353', protocol: 'udp' },
      ],
      own,
    );
    expect(p.allows('a', t('192.0.2.7', 22), 'tcp')).toBe(false);
    expect(p.allows('a', t('::ffff:192.0.2.7', 22, 6), 'tcp')).toBe(false); // v4-mapped
    expect(p.allows('a', t('fd00:0:0:0:0:0:0:7', 22, 6), 'tcp')).toBe(false); // another text form
    expect(p.allows('a', t('fe80::7', 22, 6), 'tcp')).toBe(false); // listed with its zone
    expect(p.allows('a', t('192.0.2.8', 22), 'tcp')).toBe(true); // a neighbour
    expect(p.allows('a', t('192.0.2.7', 8080), 'tcp')).toBe(true); // named: allowed
    expect(p.allows('a', t('224.0.0.251', 5353), 'udp')).toBe(false); // multicast
    expect(p.allows('a', t('239.255.255.250', 5353), 'udp')).toBe(false);
    expect(p.allows('a', t('ff02::1', 5353, 6), 'udp')).toBe(false);
    expect(p.allows('a', t('ff02::fb', 5353, 6), 'udp')).toBe(true); // named
    expect(p.allows('a', t('223.255.255.255', 5353), 'udp')).toBe(true);
    expect(reads).toBe(1); // one read per LOCAL_CHECK_MS, however many OPENs
    // The host's address changes: the next read after LOCAL_CHECK_MS follows it.
    addrs = ['198.51.100.9'];
    now = 499;
    expect(p.allows('a', t('198.51.100.9', 22), 'tcp')).toBe(true);
    now = 500;
    expect(p.allows('a', t('198.51.100.9', 22), 'tcp')).toBe(false);
    expect(p.allows('a', t('192.0.2.7', 22), 'tcp')).toBe(true); // no longer this host's
    expect(reads).toBe(2);
  });

  it('config: wrap.allow rules (peer by name, key or *, tcp by default), quotas with their defaults, bad rules refused', () => {
    const key = encodeKey(generateKeyPair().publicKey);
    const dir = mkdtempSync(join(tmpdir(), 'spook-wrapcfg-'));
    const cfg = (wrap: string): string => {
      const f = join(dir, 'c.yaml');
      writeFileSync(
        f,
        `listen: 127.0.0.1:1\nprivateKeyFile: k\ndataDir: d\nadminSocket: s\npeers:\n  - name: x\n    publicKey: ${key}\nregisters:\n  - name: r\n    kind: map\nwrap:\n${wrap}`,
      );
      return f;
    };
    try {
      const c = loadConfig(
        cfg(
          `  allow:\n    - { peer: x, to: "10.0.0.5:22" }\n    - { peer: "${key}", to: "[fd00::/64]:8000-8100", protocol: udp }\n    - { peer: "*", to: "*:443" }\n`,
        ),
      );
      expect(c.wrap.allow).toEqual([
        { peer: 'x', to: '10.0.0.5:22', protocol: 'tcp' },
        { peer: key, to: '[fd00::/64]:8000-8100', protocol: 'udp' },
        { peer: '*', to: '*:443', protocol: 'tcp' },
      ]);
      expect(c.wrap).toMatchObject({
        maxBufferedBytes: 64 * 1024 * 1024,
        maxHandshakes: 256,
        maxHandshakesPerSource: 16,
        handshakeTimeoutMs: 5_000,
        handshakeRate: 200,
        handshakeRatePerSource: 20,
      });
      expect(loadConfig(cfg('  interception: off\n')).wrap.allow).toEqual([]); // default deny
      expect(() => loadConfig(cfg(`  allow:\n    - { peer: x, to: "10.0.0.5" }\n`))).toThrow(/wrap\.allow\.0\.to/);
      expect(() => loadConfig(cfg(`  allow:\n    - { peer: nobody, to: "10.0.0.5:22" }\n`))).toThrow(
        /wrap\.allow\.0\.peer: no peer named or keyed "nobody"/,
      );
      expect(() => loadConfig(cfg(`  allow:\n    - { peer: x, to: "10.0.0.5:22", protocol: sctp }\n`))).toThrow(/wrap\.allow\.0\.protocol/);
      expect(() => loadConfig(cfg(`  windowBytes: 8388608\n  maxBufferedBytes: 4194304\n`))).toThrow(
        /wrap\.maxBufferedBytes: must be at least windowBytes/,
      );
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('answers an OPEN outside the policy with a bare refused CLOSE and dials nothing', () => {
    const b2 = new WrapSession({ ...opts, mayDial: (x) => x.port === 22, role: 1, bootId: 2n });
    b2.onCarrierUp(0);
    const out: Uint8Array[] = [];
    const rec = (r: WrapRecord): void => b2.handleRecord(0, encodeRecord(r));
    rec({ type: RecordType.Hello, version: 1, bootId: 1n });
    rec({ type: RecordType.Open, conn: 2, wrapPort: 5432, target: t('10.0.0.2', 5432), holdMs: 1000, flags: 0 });
    rec({ type: RecordType.Open, conn: 4, wrapPort: 22, target: t('10.0.0.2', 22), holdMs: 1000, flags: 0 });
    for (let r = b2.pollRecord(0); r; r = b2.pollRecord(0)) out.push(Buffer.concat(r));
    const closes = out.map((r) => decodeRecord(r)).filter((r) => r.type === RecordType.Close);
    expect(closes).toEqual([{ type: RecordType.Close, conn: 2, code: CloseCode.Refused, text: '' }]);
    const evs: WrapEvent[] = [];
    for (let e = b2.pollEvent(); e; e = b2.pollEvent()) evs.push(e);
    expect(evs.filter((e) => e.type === 'dial').map((e) => (e as { conn: number }).conn)).toEqual([4]);
    // Without a policy a session dials nothing.
    const bare = new WrapSession({ ...opts, mayDial: undefined, role: 1, bootId: 2n });
    bare.onCarrierUp(0);
    bare.handleRecord(0, encodeRecord({ type: RecordType.Hello, version: 1, bootId: 1n }));
    bare.handleRecord(0, encodeRecord({ type: RecordType.Open, conn: 2, wrapPort: 22, target: t('10.0.0.2', 22), holdMs: 1000, flags: 0 }));
    expect(bare.pollEvent()).toBeUndefined();
  });
});

describe('delta mode', () => {
  const content = (n: number, seed: number): Uint8Array => {
    const out = new Uint8Array(n);
    let x = seed;
    for (let i = 0; i < n; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      out[i] = x >>> 24;
    }
    return out;
  };
  const cut = (data: Uint8Array, piece: number): string[] => {
    const ch = new Chunker();
    const keys: string[] = [];
    for (let i = 0; i < data.length; i += piece)
      for (const c of ch.push(data.subarray(i, i + piece))) keys.push(`${c.offset}+${c.length}:${c.key}`);
    return keys;
  };

  it('chunks by content: the same bytes give the same chunks however they arrive, within bounds', () => {
    const data = content(400_000, 7);
    const whole = cut(data, data.length);
    expect(cut(data, 1_000)).toEqual(whole);
    expect(cut(data, 77_777)).toEqual(whole);
    const lengths = whole.map((k) => Number(/\+(\d+):/.exec(k)![1]));
    expect(Math.min(...lengths)).toBeGreaterThanOrEqual(CHUNK_MIN);
    expect(Math.max(...lengths)).toBeLessThanOrEqual(CHUNK_MAX);
    expect(lengths.length).toBeGreaterThan(20); // about one per 8 KiB past the minimum
    // An insertion near the start shifts offsets, not content: later chunks keep their digests.
    const shifted = new Uint8Array(data.length + 100);
    shifted.set(content(100, 99));
    shifted.set(data, 100);
    const digests = (keys: string[]): Set<string> => new Set(keys.map((k) => k.split(':')[1]));
    const before = digests(whole);
    const after = [...digests(cut(shifted, 4096))];
    expect(after.filter((d) => before.has(d)).length).toBeGreaterThan(after.length * 0.8);
  });

  it('sends a resource the peer already holds as references, and delivers it byte for byte', () => {
    const { a, b, pump } = joined();
    const body = content(300_000, 3);
    const got: Uint8Array[] = [];
    for (let round = 0; round < 2; round++) {
      const id = a.openLocal(0, 80, target, 30_000, true)!;
      pump();
      b.dialed(0, id);
      b.localData(0, id, body); // the server's response, twice over two connections
      b.localEnd(0, id);
      // The client takes what is delivered (the window lets a window's worth through at a time).
      const data: Uint8Array[] = [];
      for (let more = true; more;) {
        const ev = pump(ACK_DELAY_MS * (data.length + 1));
        const fresh = ev.a.filter((e) => e.type === 'deliver' && e.conn === id).map((e) => (e as { data: Uint8Array }).data);
        for (const d of fresh) a.drained(ACK_DELAY_MS * (data.length + 1), id, d.length);
        a.handleTimeout(ACK_DELAY_MS * (data.length + 2));
        data.push(...fresh);
        more = fresh.length > 0;
      }
      got.push(Buffer.concat(data));
    }
    expect(Buffer.compare(got[0], body)).toBe(0);
    expect(Buffer.compare(got[1], body)).toBe(0);
    // The second copy went almost entirely by reference (only its unfinished last chunk raw).
    expect(b.counters.refBytes).toBeGreaterThan(body.length - CHUNK_MAX);
    expect(a.counters.refsExpanded).toBe(b.counters.refsSent);
  });

  it('300 seeds with carrier cuts: references never change a byte', () => {
    let refBytes = 0;
    for (let seed = 1; seed <= 150; seed++) {
      const r = runWrapSim({ ...DEFAULT_WRAP_SIM, seed, delta: true });
      if (!r.ok) throw new Error(`seed ${seed}: ${r.failure} (replay: runWrapSim({...DEFAULT_WRAP_SIM, seed: ${seed}, delta: true}))`);
      refBytes += r.refBytes;
    }
    let nacks = 0;
    for (let seed = 1; seed <= 150; seed++) {
      const r = runWrapSim({ ...DEFAULT_WRAP_SIM, seed, delta: true, smallCache: true });
      if (!r.ok)
        throw new Error(
          `seed ${seed}: ${r.failure} (replay: runWrapSim({...DEFAULT_WRAP_SIM, seed: ${seed}, delta: true, smallCache: true}))`,
        );
      nacks += r.nacks;
    }
    expect(refBytes).toBeGreaterThan(10_000_000); // references happened
    expect(nacks).toBeGreaterThan(100); // and misses were recovered by NACK
  });
});

describe('wrap simulation (seeded carrier cuts)', () => {
  it('1,000 seeds: every stream is delivered exactly, in order, or both ends close at the hold', () => {
    let completed = 0;
    let expired = 0;
    let outages = 0;
    for (let seed = 1; seed <= 1000; seed++) {
      const r = runWrapSim({ ...DEFAULT_WRAP_SIM, seed });
      if (!r.ok) throw new Error(`seed ${seed}: ${r.failure} (replay: runWrapSim({...DEFAULT_WRAP_SIM, seed: ${seed}}))`);
      completed += r.completed;
      expired += r.holdExpired;
      outages += r.outages;
    }
    // Non-vacuity: outages happened, most streams survived them, some outlasted the hold.
    expect(outages).toBeGreaterThan(300);
    expect(completed).toBeGreaterThan(3500);
    expect(expired).toBeGreaterThan(10);
  });
  it('1,000 seeds, connections opened while the carrier runs, half with their OPEN deferred, cuts and restarts', () => {
    let completed = 0;
    let restarts = 0;
    for (let seed = 1; seed <= 1000; seed++) {
      const o = { ...DEFAULT_WRAP_SIM, seed, lateOpens: true, restarts: seed % 2 === 0, cutChance: 0.005 };
      const r = runWrapSim(o);
      if (!r.ok) throw new Error(`seed ${seed}: ${r.failure} (replay: runWrapSim(${JSON.stringify(o)}))`);
      completed += r.completed;
      restarts += r.restarts;
    }
    expect(completed).toBeGreaterThan(3000);
    expect(restarts).toBeGreaterThan(200);
  });
  it('a long hold makes every outage invisible', () => {
    for (let seed = 1; seed <= 200; seed++) {
      const r = runWrapSim({ ...DEFAULT_WRAP_SIM, seed, holdMs: 60_000 });
      expect(r.ok, r.failure).toBe(true);
      expect(r.holdExpired).toBe(0);
      expect(r.completed).toBe(DEFAULT_WRAP_SIM.conns);
    }
  });
});
