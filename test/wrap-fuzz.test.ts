/**
 * WRAP fuzz: an authorised peer sends 100,000 random and mutated records (OPEN, OPENED, DATA,
 * ACK, FIN, CLOSE, RESUME, REF, NACK, UDP-flow OPENs, with field extremes) into a WrapSession,
 * interleaved with an honest peer's records on the same carrier. Nothing may throw out of the
 * session, the honest connections complete byte for byte, and what the session holds stays
 * within its quotas.
 */
import { describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { decodeRecord, encodeRecord, MAX_DATA, OPEN_DATAGRAM, OPEN_DELTA, RecordType, type Target, type WrapRecord } from '../wire/wrap.js';
import { CHUNK_MAX, DIGEST_LEN } from '../core/wrap/dedup.js';
import { WrapSession } from '../core/wrap/session.js';

/** xorshift32: the run is the same for a seed. */
function rng(seed: number): {
  int: (n: number) => number;
  pick: <T>(xs: readonly T[]) => T;
  bytes: (n: number) => Uint8Array;
  slice: (n: number) => Uint8Array;
} {
  let x = seed >>> 0 || 1;
  const next = (): number => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
  const int = (n: number): number => next() % n;
  const bytes = (n: number): Uint8Array => {
    const b = new Uint8Array(n);
    for (let i = 0; i < n; i++) b[i] = next() & 0xff;
    return b;
  };
  const pool = bytes(2 * MAX_DATA);
  return {
    int,
    pick: (xs) => xs[int(xs.length)],
    bytes,
    /** n random-looking bytes, a view of a pool (large payloads without generating each byte). */
    slice: (n) => {
      const at = int(pool.length - n + 1);
      return pool.subarray(at, at + n);
    },
  };
}

const WINDOW = 256 * 1024;
const QUOTA = 2 * 1024 * 1024;
const MAX_CONNS = 64;
const opts = { windowBytes: WINDOW, maxBufferedBytes: QUOTA, maxConnections: MAX_CONNS, pingMs: 1_000, silenceMs: 3_600_000 };

describe('WRAP fuzz from an authorised peer', () => {
  it('100,000 random and mutated records: nothing escapes, the honest connections complete, memory stays within the quota', () => {
    const r = rng(0x5eed);
    // a: the honest client side; b: the serving side under attack, allowing one destination.
    const allowed: Target = { family: 4, address: '10.0.0.2', port: 22 };
    const a = new WrapSession({ ...opts, role: 0, bootId: 1n });
    const b = new WrapSession({ ...opts, role: 1, bootId: 2n, mayDial: (t) => t.address === allowed.address && t.port === allowed.port });
    a.onCarrierUp(0);
    b.onCarrierUp(0);
    let now = 0;

    // Honest connections: each sends 200 KiB and a FIN; the server side echoes it back.
    const HONEST = 4;
    const body = r.bytes(200 * 1024);
    const want = createHash('sha256').update(body).digest('hex');
    const honest = Array.from({ length: HONEST }, () => a.openLocal(0, 22, allowed, 60_000)!);
    const honestSet = new Set(honest);
    const sentUp = new Map(honest.map((id) => [id, 0]));
    const echoedDown = new Map<number, Buffer[]>(honest.map((id) => [id, []]));
    const doneA = new Set<number>();
    const doneB = new Set<number>();

    const fuzzConns: number[] = [];
    let carrierDrops = 0;
    const target = (): Target =>
      r.pick<Target>([
        allowed,
        { family: 4, address: '127.0.0.1', port: 22 },
        { family: 6, address: '0:0:0:0:0:0:0:1', port: 65535 },
        { family: 4, address: '0.0.0.0', port: 0 },
      ]);
    const offset = (): number =>
      r.pick([0, 1, WINDOW - 1, WINDOW, WINDOW + 1, QUOTA + 1, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1, r.int(4 * WINDOW)]);
    /** A connection id the fuzzer may use: its own, or any, but never the honest ones. */
    const conn = (): number => {
      const id =
        r.int(3) === 0 && fuzzConns.length
          ? r.pick(fuzzConns)
          : r.pick([0, 1, 2 ** 32 - 1, 2 ** 31, 1000 + 2 * r.int(500), r.int(2 ** 32)]);
      return honestSet.has(id) ? id + 2000 : id;
    };
    const data = (): Uint8Array => r.slice(r.pick([0, 1, 13, 1024, r.int(64 * 1024), r.int(8) === 0 ? MAX_DATA : 100]));

    /** What the fuzzer sent on each of its connections, for in-order DATA. */
    const fuzzSent = new Map<number, number>();

    /** A fuzzed record that does not name an honest connection (those are the control group). */
    function fuzzRecord(): Uint8Array {
      for (;;) {
        const buf = anyRecord();
        let named: number | undefined;
        try {
          const rec = decodeRecord(buf);
          named = 'conn' in rec ? rec.conn : undefined;
        } catch {
          // undecodable: the session must cope
        }
        if (named === undefined || !honestSet.has(named)) return buf;
      }
    }

    function anyRecord(): Uint8Array {
      const kind = r.int(12);
      if (kind >= 10 && fuzzConns.length) {
        // To the letter: in-order DATA on one of its connections, whose server never reads,
        // until the window or the quota says no.
        const id = r.pick(fuzzConns);
        const off = fuzzSent.get(id) ?? 0;
        const n = 16 * 1024 + r.int(48 * 1024);
        fuzzSent.set(id, off + n);
        return encodeRecord({ type: RecordType.Data, conn: id, offset: off, data: r.slice(n) });
      }
      let rec: WrapRecord;
      switch (kind) {
        case 0: {
          const id = 1000 + 2 * r.int(500); // the peer's parity: B would accept it
          fuzzConns.push(id);
          if (fuzzConns.length > 200) fuzzConns.shift();
          rec = {
            type: RecordType.Open,
            conn: r.int(4) ? id : conn(),
            wrapPort: r.int(65536),
            target: target(),
            holdMs: r.pick([0, 1, 2 ** 32 - 1, 30_000]),
            flags: r.pick([0, OPEN_DELTA, OPEN_DATAGRAM, OPEN_DELTA | OPEN_DATAGRAM, 0xff]),
          };
          break;
        }
        case 1:
          rec = { type: RecordType.Opened, conn: conn() };
          break;
        case 2:
        case 3:
          rec = { type: RecordType.Data, conn: conn(), offset: offset(), data: data() };
          break;
        case 4:
          rec = { type: r.pick([RecordType.Ack, RecordType.Fin, RecordType.Resume] as const), conn: conn(), offset: offset() };
          break;
        case 5:
          rec = { type: RecordType.Ref, conn: conn(), offset: offset(), length: 1 + r.int(CHUNK_MAX), digest: r.bytes(DIGEST_LEN) };
          break;
        case 6:
          rec = { type: RecordType.Nack, conn: conn(), offset: offset() };
          break;
        case 7:
          rec = { type: RecordType.Close, conn: conn(), code: r.int(256), text: 'x'.repeat(r.int(300)) };
          break;
        case 8:
          rec = { type: r.pick([RecordType.Ping, RecordType.Pong] as const) };
          break;
        default:
          return r.bytes(r.int(64)); // noise
      }
      const buf = encodeRecord(rec);
      switch (r.int(4)) {
        case 0: // one byte flipped
          if (buf.length) buf[r.int(buf.length)] ^= 1 << r.int(8);
          return buf;
        case 1: // truncated or extended
          return r.int(2) ? buf.subarray(0, r.int(buf.length + 1)) : new Uint8Array([...buf.subarray(0, 64), ...r.bytes(1 + r.int(8))]);
        default:
          return buf;
      }
    }

    // The I/O around b (dial, deliver, end) and around a (deliver, done), as a manager would.
    function driveB(): void {
      for (let e = b.pollEvent(); e; e = b.pollEvent()) {
        if (e.type === 'dial') {
          if (honestSet.has(e.conn) || r.int(4)) b.dialed(now, e.conn);
          else b.dialFailed(now, e.conn, 'fuzz');
        } else if (e.type === 'deliver') {
          // The honest server reads and echoes; the fuzzer's servers never read.
          if (honestSet.has(e.conn)) {
            b.drained(now, e.conn, e.data.length);
            b.localData(now, e.conn, e.data);
          }
        } else if (e.type === 'end' && honestSet.has(e.conn)) b.localEnd(now, e.conn);
        else if (e.type === 'done') doneB.add(e.conn);
        else if (e.type === 'drop-carrier') {
          // A HELLO of another version among the noise: the carrier is redialled, as spookd does.
          carrierDrops++;
          a.onCarrierDown(now);
          a.onCarrierUp(now);
          b.onCarrierUp(now);
        }
      }
    }
    function driveA(): void {
      for (let e = a.pollEvent(); e; e = a.pollEvent()) {
        if (e.type === 'deliver') {
          a.drained(now, e.conn, e.data.length);
          echoedDown.get(e.conn)?.push(Buffer.from(e.data));
        } else if (e.type === 'done') doneA.add(e.conn);
        else if (e.type === 'close') throw new Error(`honest connection ${e.conn} closed: ${e.reason}`);
      }
      for (const id of honest) {
        const n = sentUp.get(id)!;
        if (n < body.length && a.room(id) > 0) {
          const piece = body.subarray(n, n + Math.min(a.room(id), 16 * 1024));
          a.localData(now, id, piece);
          sentUp.set(id, n + piece.length);
          if (n + piece.length === body.length) a.localEnd(now, id);
        }
      }
    }
    const atoB = (): void => {
      for (let rec = a.pollRecord(now); rec; rec = a.pollRecord(now)) b.handleRecordParts(now, rec);
    };
    const btoA = (): void => {
      for (let rec = b.pollRecord(now); rec; rec = b.pollRecord(now)) a.handleRecordParts(now, rec);
    };

    b.handleRecord(0, encodeRecord({ type: RecordType.Hello, version: 1, bootId: 1n, window: WINDOW, buffer: QUOTA }));
    a.handleRecord(0, encodeRecord({ type: RecordType.Hello, version: 1, bootId: 2n, window: WINDOW, buffer: QUOTA }));
    let maxIn = 0;
    let maxOut = 0;
    let maxConns = 0;
    let audit: string | undefined;
    const started = performance.now();
    for (let i = 0; i < 100_000; i++) {
      b.handleRecord(now, fuzzRecord());
      if (i % 8 === 0) {
        // The honest side's records share the carrier.
        driveA();
        atoB();
        driveB();
        btoA();
      }
      if (i % 100 === 0) {
        now += 1;
        a.handleTimeout(now);
        b.handleTimeout(now);
        // The incremental send queue and in-flight total, against a scan of the connections.
        audit ??= b.audit() ?? a.audit();
      }
      maxIn = Math.max(maxIn, b.bufferedIn);
      maxOut = Math.max(maxOut, b.bufferedOut);
      maxConns = Math.max(maxConns, b.conns.size);
    }
    // Let the honest connections finish.
    for (let k = 0; k < 2_000 && doneA.size < HONEST; k++) {
      now += 1;
      a.handleTimeout(now);
      b.handleTimeout(now);
      driveA();
      atoB();
      driveB();
      btoA();
    }
    const elapsed = performance.now() - started;
    expect(doneA.size).toBe(HONEST);
    expect(audit).toBeUndefined();
    for (const id of honest)
      expect(
        createHash('sha256')
          .update(Buffer.concat(echoedDown.get(id)!))
          .digest('hex'),
      ).toBe(want);
    expect(maxIn).toBeLessThanOrEqual(QUOTA);
    expect(maxIn).toBeGreaterThan(WINDOW); // the fuzzer's never-reading servers held several windows at once
    expect(maxOut).toBeLessThanOrEqual(QUOTA + 64 * 1024);
    expect(maxConns).toBeLessThanOrEqual(MAX_CONNS);
    expect(b.counters.violations).toBeGreaterThan(1_000);
    expect(b.counters.recordsIn).toBeGreaterThan(100_000);
    expect(elapsed).toBeLessThan(15_000);
    expect(carrierDrops).toBeLessThan(20);
  }, 30_000);
});
