/**
 * A seeded simulation of two WrapSessions over a carrier that is cut and redialled: clients on
 * side A stream random bytes to servers on side B and back, with slow readers (backpressure),
 * while the carrier drops everything in flight at random moments. It checks the stream
 * contract of PROTOCOL §16: outages shorter than the hold are invisible (every byte delivered
 * once, in order, both directions complete), longer ones close both ends with hold-expired
 * and never deliver a wrong byte; buffers stay within the window.
 */
import { Rng } from './rng.js';
import { CloseCode, CLOSE_NAMES } from '../../wire/wrap.js';
import { WrapSession, type WrapEvent } from '../../core/wrap/session.js';
import { decodeHandover, encodeHandover } from '../../core/wrap/handover.js';

export interface WrapSimOptions {
  seed: number;
  conns: number;
  maxBytes: number;
  windowBytes: number;
  holdMs: number;
  /** Chance per ms that the carrier is cut, and the outage length range. */
  cutChance: number;
  outageMs: [number, number];
  maxMs: number;
  /** Delta mode on every connection, with streams built from a few repeated blocks (so references happen). */
  delta?: boolean;
  /** Delta mode with a receiver cache far smaller than the sender's index on side A: references miss (NACK). */
  smallCache?: boolean;
  /**
   * Half the cuts are a restart of one side through a handover (core/wrap/handover.ts): its
   * sockets take what they were handed, its state is encoded, decoded and imported into a new
   * session with the same boot id (not with delta mode, which is not handed over).
   */
  restarts?: boolean;
  /**
   * Half the connections open at a random moment of the run rather than at its start, half of
   * those with their OPEN deferred for their first bytes (openLocal's deferOpen), announced at
   * a random later ms (as the I/O layer's next poll would) or by the session's own timer.
   */
  lateOpens?: boolean;
}

export const DEFAULT_WRAP_SIM: Omit<WrapSimOptions, 'seed'> = {
  conns: 4,
  maxBytes: 300_000,
  windowBytes: 64 * 1024,
  holdMs: 2_000,
  cutChance: 0.002,
  outageMs: [10, 2_500],
  maxMs: 120_000,
};

interface End {
  sent: Uint8Array;
  pos: number; // bytes handed to the session
  got: number; // bytes delivered to this end (each checked against what the other end sent)
  undrained: number;
  ended: boolean; // the peer's FIN arrived
  closed: string | undefined;
  done: boolean;
  paused: boolean;
}

export interface WrapSimResult {
  seed: number;
  ok: boolean;
  failure?: string;
  completed: number;
  holdExpired: number;
  outages: number;
  cuts: number;
  /** Cuts that were a restart of one side through a handover. */
  restarts: number;
  ms: number;
  /** Delta mode: stream bytes sent as references, and NACKs (references the receiver lacked). */
  refBytes: number;
  nacks: number;
}

export function runWrapSim(o: WrapSimOptions): WrapSimResult {
  const rng = new Rng(o.seed);
  const base = { windowBytes: o.windowBytes, maxConnections: 64, pingMs: 200, silenceMs: 1_000, mayDial: () => true };
  const optsA = { ...base, role: 0 as const, bootId: 1n, deltaCacheBytes: o.smallCache ? 60_000 : undefined };
  const optsB = { ...base, role: 1 as const, bootId: 2n };
  let A = new WrapSession(optsA);
  let B = new WrapSession(optsB);
  let restarts = 0;
  const wire: [Uint8Array[], Uint8Array[]] = [[], []]; // A→B, B→A
  const client = new Map<number, End>();
  const server = new Map<number, End>();
  // Stream contents: a cheap generator seeded from the run's Rng (rng.bytes is slow for MBs).
  const content = (n: number): Uint8Array => {
    const out = new Uint8Array(n);
    let x = rng.int(1, 0x7fffffff);
    for (let i = 0; i < n; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      out[i] = x >>> 24;
    }
    return out;
  };
  // Delta mode: streams are runs of a few blocks shared by every connection, at random offsets.
  const blocks = o.delta ? [0, 1, 2, 3].map(() => content(rng.int(10_000, 40_000))) : [];
  const repeated = (n: number): Uint8Array => {
    const out = new Uint8Array(n);
    for (let at = 0; at < n;) {
      const b = rng.pick(blocks);
      const take = Math.min(b.length, n - at);
      out.set(b.subarray(0, take), at);
      at += take;
      if (at < n && rng.chance(0.3)) out[at++] = rng.int(0, 255); // a changed byte between blocks
    }
    return out;
  };
  const mk = (n: number): End => ({
    sent: o.delta ? repeated(n) : content(n),
    pos: 0,
    got: 0,
    undrained: 0,
    ended: false,
    closed: undefined,
    done: false,
    paused: false,
  });
  /** A record cut at up to three random points, as TCP reads would cut it. */
  const pieces = (rec: Uint8Array): Uint8Array[] => {
    const cuts = [...new Set(Array.from({ length: rng.int(0, 3) }, () => rng.int(1, Math.max(1, rec.length - 1))))].sort((x, y) => x - y);
    const out: Uint8Array[] = [];
    let at = 0;
    for (const c of [...cuts, rec.length]) {
      if (c > at) out.push(rec.subarray(at, c));
      at = c;
    }
    return out.length ? out : [rec];
  };
  let up = false;
  let downUntil = 0;
  let cuts = 0;
  let outages = 0;
  let failure: string | undefined;
  const fail = (m: string): void => {
    failure ??= m;
  };

  let now = 0;
  const openAt = Array.from({ length: o.conns }, (_, i) => (o.lateOpens && i % 2 === 1 ? rng.int(1, 3_000) : 0));
  const openDue = (): void => {
    for (let i = 0; i < o.conns; i++) {
      if (openAt[i] !== now) continue;
      const id = A.openLocal(now, 22, { family: 4, address: '10.0.0.2', port: 22 }, o.holdMs, o.delta, false, rng.chance(0.5))!;
      client.set(id, mk(rng.int(0, o.maxBytes)));
    }
  };
  openDue();

  const handle = (side: WrapSession, ends: Map<number, End>, ev: WrapEvent): void => {
    if (ev.type === 'dial') {
      ends.set(ev.conn, mk(rng.int(0, o.maxBytes)));
      side.dialed(now, ev.conn);
    } else if (ev.type === 'deliver') {
      const e = ends.get(ev.conn)!;
      const from = (ends === server ? client : server).get(ev.conn)!.sent;
      if (e.got + ev.data.length > from.length)
        fail(`conn ${ev.conn}: ${e.got + ev.data.length} bytes delivered, only ${from.length} sent`);
      for (let i = 0; i < ev.data.length; i++)
        if (ev.data[i] !== from[e.got + i]) return fail(`conn ${ev.conn}: byte ${e.got + i} differs`);
      e.got += ev.data.length;
      e.undrained += ev.data.length;
      // The sender may overshoot its window by one local read (20,000 bytes here).
      if (e.undrained > o.windowBytes + 20_000) fail(`conn ${ev.conn}: ${e.undrained} bytes undrained, window ${o.windowBytes}`);
    } else if (ev.type === 'end') ends.get(ev.conn)!.ended = true;
    else if (ev.type === 'writable') ends.get(ev.conn)!.paused = false;
    else if (ev.type === 'close') ends.get(ev.conn)!.closed = CLOSE_NAMES[ev.code];
    else if (ev.type === 'done') ends.get(ev.conn)!.done = true;
    else if (ev.type === 'held') outages++;
    else if (ev.type === 'violation') fail(`violation: ${ev.detail}`);
  };

  const app = (side: WrapSession, ends: Map<number, End>): void => {
    for (const [id, e] of ends) {
      if (e.closed || e.done || !side.conns.has(id)) continue;
      // The reader drains at a random pace (a slow reader some of the time).
      if (e.undrained > 0 && rng.chance(0.5)) {
        const n = Math.min(e.undrained, rng.int(1, 16_384));
        e.undrained -= n;
        side.drained(now, id, n);
        if (!side.conns.has(id)) continue;
      }
      if (!e.paused && e.pos < e.sent.length && rng.chance(0.7)) {
        const n = Math.min(e.sent.length - e.pos, rng.int(1, 20_000));
        const more = side.localData(now, id, e.sent.subarray(e.pos, e.pos + n));
        e.pos += n;
        if (!more) e.paused = true;
        const c = side.conns.get(id)!;
        if (c.send.buffered > o.windowBytes + 20_000) fail(`conn ${id}: ${c.send.buffered} bytes buffered, window ${o.windowBytes}`);
      }
      if (e.pos === e.sent.length && side.conns.get(id)!.send.finAt === undefined) side.localEnd(now, id);
    }
  };

  /**
   * A restart of `side` through a handover: each socket took a random part of what it was
   * handed and not yet drained (its kernel holds that); the rest was still queued in the process
   * and dies with it, and the peer resends it to the next one.
   */
  const restart = (side: WrapSession, ends: Map<number, End>, opts: typeof optsA | typeof optsB): WrapSession => {
    for (let ev = side.pollEvent(); ev; ev = side.pollEvent()) handle(side, ends, ev);
    const kernel = new Map<number, number>();
    for (const c of side.conns.values()) kernel.set(c.id, c.recv.drained + rng.int(0, c.recv.received - c.recv.drained));
    let fd = 0;
    const exported = side.exportHandover(now, 'peer', (c) => ({ fd: fd++, received: kernel.get(c.id)! }));
    const h = decodeHandover(encodeHandover({ bootId: opts.bootId, peers: [exported] }));
    const next = new WrapSession(opts);
    const taken = next.importHandover(now, h.peers[0]);
    if (taken.size !== side.conns.size) fail(`restart: ${side.conns.size} connections, ${taken.size} restored`);
    for (const [id, e] of ends) {
      const k = kernel.get(id);
      if (k === undefined) continue;
      // The application reads what the kernel holds by itself; what was lost comes again from the peer.
      e.got = k;
      e.undrained = 0;
      // The new process reads every socket again: one whose window is full pauses at once.
      e.paused = next.room(id) === 0;
    }
    restarts++;
    return next;
  };

  const settled = (): boolean =>
    client.size === o.conns &&
    [...client.values(), ...server.values()].every((e) => e.done || e.closed !== undefined) &&
    server.size >= client.size;

  for (now = 0; now < o.maxMs && !failure; now++) {
    if (up && rng.chance(o.cutChance)) {
      up = false;
      cuts++;
      downUntil = now + rng.int(o.outageMs[0], o.outageMs[1]);
      wire[0].length = 0;
      wire[1].length = 0;
      A.onCarrierDown(now);
      B.onCarrierDown(now);
      if (o.restarts && !o.delta && rng.chance(0.5)) {
        if (rng.chance(0.5)) A = restart(A, client, optsA);
        else B = restart(B, server, optsB);
      }
    } else if (!up && now >= downUntil) {
      up = true;
      A.onCarrierUp(now);
      B.onCarrierUp(now);
    }
    if (now > 0) openDue();
    if (o.lateOpens && rng.chance(0.3)) A.announceDeferred(now);
    for (const s of [A, B]) {
      const t = s.pollTimeout();
      if (t !== undefined && t <= now) s.handleTimeout(now);
    }
    app(A, client);
    app(B, server);
    // Each direction carries a bounded number of records per ms, in order.
    for (const [from, q] of [
      [A, wire[0]],
      [B, wire[1]],
    ] as const) {
      for (let r = from.pollRecord(now); r; r = from.pollRecord(now)) q.push(Buffer.concat(r));
    }
    if (up) {
      // Records arrive as the carrier decrypts them: in the pieces of the reads they spanned.
      for (let k = 0; k < 8 && wire[0].length; k++) B.handleRecordParts(now, pieces(wire[0].shift()!));
      for (let k = 0; k < 8 && wire[1].length; k++) A.handleRecordParts(now, pieces(wire[1].shift()!));
    }
    for (let ev = A.pollEvent(); ev; ev = A.pollEvent()) handle(A, client, ev);
    for (let ev = B.pollEvent(); ev; ev = B.pollEvent()) handle(B, server, ev);
    // The sessions' incremental send queue and in-flight total against a scan of every connection.
    for (const s of [A, B]) {
      const bad = s.audit();
      if (bad) fail(`audit of ${s === A ? 'A' : 'B'} at ${now} ms: ${bad}`);
    }
    if (settled()) break;
  }

  let completed = 0;
  let holdExpired = 0;
  for (const [id, c] of client) {
    const s = server.get(id);
    if (!s) {
      if (c.closed === undefined) fail(`conn ${id}: never reached the server and never closed`);
      continue;
    }
    if (c.done && s.done) {
      completed++;
      if (s.got !== c.sent.length || c.got !== s.sent.length) fail(`conn ${id}: done with bytes missing`);
    } else if (c.closed === CLOSE_NAMES[CloseCode.HoldExpired] || s.closed === CLOSE_NAMES[CloseCode.HoldExpired]) holdExpired++;
    else
      fail(
        `conn ${id}: neither completed nor hold-expired (client ${c.closed ?? (c.done ? 'done' : 'open')}, server ${s.closed ?? (s.done ? 'done' : 'open')})`,
      );
  }
  return {
    seed: o.seed,
    ok: !failure,
    failure,
    completed,
    holdExpired,
    outages,
    cuts,
    ms: now,
    restarts,
    refBytes: A.counters.refBytes + B.counters.refBytes,
    nacks: A.counters.nacksSent + B.counters.nacksSent,
  };
}
