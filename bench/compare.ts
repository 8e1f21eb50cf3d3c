/**
 * `spook-lab bench compare`: one workload through three systems in one process.
 *
 *  - Spook: two HalfPairs over an in-memory simulated link (no loss, no delay), a `map`
 *    register. Every Data frame is sealed as spookd seals it (ETCP Session.seal: the 20-byte
 *    header, the payload, the 16-byte AEAD tag) and opened at the other end, so the bytes
 *    counted are the UDP payloads spookd sends (IP and UDP headers are not counted, for any
 *    system). Simulated time passes between steady-state updates (`spacingMs`), so delayed
 *    acknowledgements ride a later datagram only when one really comes within their delay.
 *  - Yjs: two Y.Doc with a Y.Map; updates exchanged as Yjs update messages, catch-up by
 *    state vector → diff update, as its documentation describes. The bytes are the update
 *    payloads alone.
 *  - Yjs over y-websocket (`yjs-websocket`): what a Yjs deployment sends for the same updates:
 *    two clients kept in step through a y-websocket server (three Y.Doc), each message a
 *    y-protocols sync message (varuint messageSync, varuint messageYjsUpdate, varUint8Array
 *    update, built with lib0/encoding as y-protocols' writeUpdate does) in one WebSocket frame
 *    (RFC 6455: 2-byte header, +2 past 125 bytes, +8 past 65,535; +4 mask client to server) in
 *    one TLS 1.3 record (5-byte header, 1 content-type byte, 16-byte tag). The server sends
 *    every update to every connection, the writer's own included (y-websocket's updateHandler),
 *    so a write costs one message in and two out. Catch-up: the reconnecting client's sync step
 *    1 and 2 and the server's, framed the same way. Its rate and memory are the bare Yjs row's.
 *  - Automerge: two documents kept in step with its sync protocol (generateSyncMessage /
 *    receiveSyncMessage until both sides are quiet).
 *
 * The workload, seeded and identical for all three: a map of N keys (values 8-64 random
 * bytes); U steady-state updates alternating sides, one in ten a concurrent write of the
 * same key from both sides before they sync; then one side is cut off while the other
 * makes K updates; then it reconnects and catches up. Every row states whether both
 * sides ended identical.
 */
import v8 from 'node:v8';
import vm from 'node:vm';
import * as Y from 'yjs';
import * as encoding from 'lib0/encoding';
import * as AM from '@automerge/automerge';
import { DeltaOp } from '../wire/delta.js';
import { decodeFrame } from '../wire/header.js';
import { HEADER_LEN } from '../wire/constants.js';
import { TAGLEN } from '../crypto/primitives.js';
import { MsgType, decodeMessages } from '../wire/messages.js';
import { HalfPair, type RegisterSpec } from '../core/pair/halfpair.js';
import { MAX_SEALED_PAYLOAD, Session } from '../core/etcp/endpoint.js';
import { CipherState } from '../core/etcp/noise.js';
import { frameAead } from '../drivers/crypto/frame-aead.js';
import type { AeadImpl } from '../crypto/aead.js';
import { PairState } from '../core/pair/lifecycle.js';
import type { MapState } from '../core/register/map.js';
import { SimWorld } from '../testing/sim/world.js';
import { Rng } from '../testing/sim/rng.js';

export interface CompareRow {
  system: 'spook' | 'yjs' | 'yjs-websocket' | 'automerge';
  n: number;
  k: number;
  /** Bytes exchanged per steady-state update (both directions, all protocol overhead), updates `spacingMs` apart. */
  bytesPerUpdate: number;
  /** The same with updates `sparseSpacingMs` apart (longer than the delay of an acknowledgement). */
  bytesPerUpdateSparse: number;
  spacingMs: number;
  sparseSpacingMs: number;
  /** Steady-state updates per second of CPU time, write to applied at the other side. */
  updatesPerSec: number;
  /** Bytes and milliseconds for the cut-off side to catch up after K missed updates. */
  catchUpBytes: number;
  catchUpMs: number;
  /** Spook only: how the cut-off side caught up (docs/PROTOCOL.md §8.1): log replay, log diff, range reconciliation or full transfer. */
  catchUpPath?: 'log' | 'diff' | 'reconcile' | 'full';
  /** Memory (JS heap + external) held by the two replicas of the N-key state, after GC; -1 if not measured. */
  stateHeapBytes: number;
  identical: boolean;
}

interface System {
  write(side: 0 | 1, key: string, value: Uint8Array): void;
  /** Exchange until both sides are quiet; returns bytes moved. */
  sync(): number;
  /** Catch up after a cut; returns bytes moved. */
  reconnect(): number;
  setConnected(up: boolean): void;
  identical(): boolean;
  /** Spook: the catch-up path taken. */
  path?(): CompareRow['catchUpPath'];
  /** Let `ms` of (simulated) time pass with no write; returns bytes moved meanwhile (delayed acknowledgements, keepalives). */
  idle(ms: number): number;
}

v8.setFlagsFromString('--expose_gc');
const gc = vm.runInNewContext('gc') as () => void;
/** JS heap plus memory outside it (Automerge keeps its documents in WebAssembly memory). */
function heap(): number {
  gc();
  gc();
  const m = process.memoryUsage();
  return m.heapUsed + m.external;
}

/** Memory held by the two replicas of an N-key state, measured on its own (not inside a timed row). */
export function stateMemory(system: keyof typeof SYSTEMS, n: number): number {
  const h0 = heap();
  const { holder } = SYSTEMS[system](n, new Rng(n));
  const used = heap() - h0;
  void holder;
  return Math.max(used, 0);
}

/** CPU milliseconds of this process (all its threads: a system's garbage collection counts against it). */
function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

const enc = new TextEncoder();
const keyName = (i: number): string => `key-${i}`;

// ---------------------------------------------------------------- Spook

/** The Data frames' AEAD: spookd's (libcrypto's EVP where it loads); `node` forces node:crypto (a same-run baseline). */
let sessionAead: AeadImpl | undefined;
export function setSpookAead(impl: AeadImpl | undefined): void {
  sessionAead = impl;
}

/**
 * Two ETCP sessions keyed to each other, as a handshake leaves them (the keys are fixed: the
 * bench measures sizes, not secrecy). Each end seals its Data frames as spookd does, with the
 * AEAD spookd injects (drivers/crypto/frame-aead.ts).
 */
function sealedLink(): [Session, Session] {
  const aead = frameAead(sessionAead);
  const key = (b: number): Uint8Array => new Uint8Array(32).fill(b);
  const keys = (send: number, recv: number) => ({
    send: new CipherState(key(send)),
    recv: new CipherState(key(recv)),
    handshakeHash: key(0),
    remoteStatic: key(0),
  });
  const peer = { publicKey: key(0), name: 'peer' };
  return [new Session(11, 22, peer, true, keys(1, 2), 1, 2, 3, 0, aead), new Session(22, 11, peer, false, keys(2, 1), 2, 1, 3, 0, aead)];
}

/**
 * The two ends of a pair whose frames are sealed as spookd seals them (ETCP, `maxPayload` less
 * the tag) and opened at the other end before the pair sees their payload. `plaintexts`, if
 * given, maps each sealed frame to its payload (for the breakdown).
 */
function sealedPairs(registers: RegisterSpec[], plaintexts?: WeakMap<Uint8Array, Uint8Array>): [HalfPair, HalfPair] {
  const sessions = sealedLink();
  const pairs = sessions.map((sess, i) => {
    const seal = (payload: Uint8Array): { frame: Uint8Array; packetNumber: number } => {
      const frame = sess.seal(payload);
      plaintexts?.set(frame, payload);
      return { frame, packetNumber: sess.packetsSent - 1 };
    };
    // As spookd: the payload is sealed where the pair joined it, behind room for the header and before room for the tag.
    const sealInPlace = (frame: Uint8Array): number => {
      plaintexts?.set(frame, frame.slice(HEADER_LEN, frame.length - TAGLEN));
      return sess.sealInPlace(frame);
    };
    const sealer = { seal, sealInPlace, tailroom: TAGLEN };
    const opts = { pairId: 1, localId: i + 1, peerId: 2 - i, seed: 3, registers, maxPayload: MAX_SEALED_PAYLOAD, sealer };
    return new HalfPair(opts, 0);
  }) as [HalfPair, HalfPair];
  pairs.forEach((p, i) => {
    p.handleDatagram = (now, d) => {
      const pn = decodeFrame(d).header.packetNumber;
      const opened = sessions[i].open(d, pn);
      if ('drop' in opened) throw new Error(`bench: a frame did not open (${opened.drop})`);
      return p.handlePayload(now, pn, opened.payload, d.length);
    };
  });
  return pairs;
}

function spook(n: number, rng: Rng): { sys: System; holder: unknown } {
  const world = new SimWorld(1, { loss: 0, dup: 0, reorder: 0, minDelayMs: 0, maxDelayMs: 0 });
  world.verify = false; // the simulator's own checks are not what is measured
  const registers = [{ name: 'm', kind: 'map' as const, maxPending: 1_000_000, log: { maxRecords: 1_000_000, maxBytes: 1 << 30 } }];
  const [a, b] = sealedPairs(registers);
  const init = Array.from({ length: n }, () => rng.bytes(rng.int(8, 64)));
  for (const p of [a, b])
    p.register('m').restore(1, (st) => init.forEach((v, i) => (st as MapState).put(enc.encode(keyName(i)), v.slice(), 1)));
  const eps = world.adopt(['A', 'B'], [a, b]);
  const aligned = (): boolean => {
    const ra = a.register('m');
    const rb = b.register('m');
    return (
      a.state !== PairState.FORMING &&
      b.state !== PairState.FORMING &&
      ra.version === rb.version &&
      ra.hash.hi === rb.hash.hi &&
      ra.hash.lo === rb.hash.lo &&
      ra.pendingCount + rb.pendingCount === 0
    );
  };
  /**
   * Drain both ends (sends what they have), run until aligned, checked after every event so
   * that the run stops before time moves on to a timer; bytes sent in all of it.
   */
  const run = (checkEveryMs = 0): number => {
    const before = world.net.stats.bytesSent;
    for (const e of eps) world.drain(e);
    if (!world.run(world.now + 600_000, aligned, checkEveryMs)) throw new Error('spook: did not align');
    return world.net.stats.bytesSent - before;
  };
  run();
  world.run(world.now + 2_000); // formed: first statuses and keepalives out of the way
  return {
    holder: [a, b, world],
    sys: {
      write: (side, key, value) => void eps[side].pair.propose(world.now, 'm', { op: DeltaOp.Set, key: enc.encode(key), value }),
      sync: () => run(),
      idle: (ms) => {
        const before = world.net.stats.bytesSent;
        world.run(world.now + ms);
        return world.net.stats.bytesSent - before;
      },
      setConnected: (up) => {
        // Reconnecting: first let the cut last past the silence timeout (simulated time), so
        // both ends decohere and catch-up is a real re-entanglement, as after an outage.
        if (up) world.run(world.now + 6_000);
        world.net.setLink('A', 'B', up);
        world.net.setLink('B', 'A', up);
        if (!up) for (const e of eps) world.drain(e); // collapse now, nothing crosses
      },
      // Everything from reconnection until aligned: retransmissions, statuses, acks (checked each ms, as before).
      reconnect: () => run(1),
      identical: () => aligned(),
      path: () => {
        const r = a.register('m').sequencer!.responder;
        if (r.diffsBuilt > 0 && !b.stats.drops['diff-mismatch']) return 'diff';
        if (b.stats.fullTransfers > 0) return 'full';
        return r.pinsBuilt > 0 ? 'reconcile' : 'log';
      },
    },
  };
}

// ---------------------------------------------------------------- Yjs

function yjs(n: number, rng: Rng): { sys: System; holder: unknown } {
  const docs = [new Y.Doc(), new Y.Doc()];
  const maps = docs.map((d) => d.getMap<Uint8Array>('m'));
  docs[0].transact(() => {
    for (let i = 0; i < n; i++) maps[0].set(keyName(i), rng.bytes(rng.int(8, 64)));
  });
  Y.applyUpdate(docs[1], Y.encodeStateAsUpdate(docs[0]), 'remote');
  const queues: Uint8Array[][] = [[], []]; // updates waiting to reach side i
  let connected = true;
  docs.forEach((d, i) =>
    d.on('update', (u: Uint8Array, origin: unknown) => {
      if (origin !== 'remote' && connected) queues[1 - i].push(u);
    }),
  );
  return {
    holder: docs,
    sys: {
      write: (side, key, value) => maps[side].set(key, value),
      sync: () => {
        let bytes = 0;
        while (queues[0].length + queues[1].length > 0) {
          for (const i of [0, 1]) {
            for (const u of queues[i].splice(0)) {
              bytes += u.length;
              Y.applyUpdate(docs[i], u, 'remote');
            }
          }
        }
        return bytes;
      },
      setConnected: (up) => {
        connected = up;
      },
      idle: () => 0,
      reconnect: () => {
        // Each side sends its state vector; the other answers with the diff.
        let bytes = 0;
        for (const [from, to] of [
          [0, 1],
          [1, 0],
        ]) {
          const sv = Y.encodeStateVector(docs[to]);
          const diff = Y.encodeStateAsUpdate(docs[from], sv);
          bytes += sv.length + diff.length;
          Y.applyUpdate(docs[to], diff, 'remote');
        }
        return bytes;
      },
      identical: () => {
        const a = maps[0].toJSON();
        const b = maps[1].toJSON();
        const ka = Object.keys(a);
        return ka.length === Object.keys(b).length && ka.every((k) => Buffer.from(a[k]).equals(Buffer.from(b[k])));
      },
    },
  };
}

// ---------------------------------------------------------------- Yjs over y-websocket

/** y-protocols message types (y-websocket's messageSync; y-protocols/sync's step 1, step 2, update). */
const MESSAGE_SYNC = 0;
const SYNC_STEP1 = 0;
const SYNC_STEP2 = 1;
const SYNC_UPDATE = 2;
/** A TLS 1.3 record around each message: 5-byte header, inner content type, 16-byte AEAD tag (RFC 8446 §5.2). */
const TLS13_RECORD = 5 + 1 + 16;

/** A y-protocols sync message as y-websocket sends it: writeVarUint(messageSync), then writeUpdate / writeSyncStep1 / 2. */
export function ySyncMessage(kind: number, body: Uint8Array): Uint8Array {
  const e = encoding.createEncoder();
  encoding.writeVarUint(e, MESSAGE_SYNC);
  encoding.writeVarUint(e, kind);
  encoding.writeVarUint8Array(e, body);
  return encoding.toUint8Array(e);
}

/** A WebSocket binary frame's header (RFC 6455 §5.2): 2 bytes, +2 or +8 for the length, +4 mask from a client. */
export function wsHeaderLen(payload: number, fromClient: boolean): number {
  return 2 + (payload > 65_535 ? 8 : payload > 125 ? 2 : 0) + (fromClient ? 4 : 0);
}

/** Bytes on the TCP connection for one y-websocket message: the WebSocket frame in one TLS 1.3 record. */
export function wsTlsBytes(message: Uint8Array, fromClient: boolean): number {
  return message.length + wsHeaderLen(message.length, fromClient) + TLS13_RECORD;
}

/**
 * Two clients (sides 0 and 1) kept in step through a y-websocket server, as y-websocket's
 * server does it: an update from a connection is applied to the server's doc, whose update
 * handler sends it to every connection, the sender's included.
 */
function yjsWebsocket(n: number, rng: Rng): { sys: System; holder: unknown } {
  const docs = [new Y.Doc(), new Y.Doc(), new Y.Doc()]; // client 0, client 1, server
  const server = docs[2];
  const maps = docs.map((d) => d.getMap<Uint8Array>('m'));
  docs[0].transact(() => {
    for (let i = 0; i < n; i++) maps[0].set(keyName(i), rng.bytes(rng.int(8, 64)));
  });
  for (const d of [docs[1], server]) Y.applyUpdate(d, Y.encodeStateAsUpdate(docs[0]), 'remote');
  const toServer: [number, Uint8Array][] = []; // (client, message) in flight to the server
  const toClient: Uint8Array[][] = [[], []];
  let connected = true;
  /** Bytes sent so far, and those already returned by sync or reconnect. */
  let bytes = 0;
  let counted = 0;
  for (const i of [0, 1])
    docs[i].on('update', (u: Uint8Array, origin: unknown) => {
      if (origin === 'remote' || (!connected && i === 1)) return;
      const m = ySyncMessage(SYNC_UPDATE, u);
      bytes += wsTlsBytes(m, true);
      toServer.push([i, m]);
    });
  server.on('update', (u: Uint8Array) => {
    const m = ySyncMessage(SYNC_UPDATE, u);
    for (const c of [0, 1]) {
      if (!connected && c === 1) continue;
      bytes += wsTlsBytes(m, false);
      toClient[c].push(m);
    }
  });
  /** The update inside a sync message (messageSync, kind, then a varuint length and the bytes). */
  const take = (m: Uint8Array): Uint8Array => {
    let i = 2;
    let len = 0;
    for (let shift = 0; ; shift += 7) {
      const b = m[i++];
      len += (b & 0x7f) * 2 ** shift;
      if (b < 0x80) break;
    }
    return m.subarray(i, i + len);
  };
  const deliver = (): void => {
    while (toServer.length + toClient[0].length + toClient[1].length > 0) {
      for (const [, m] of toServer.splice(0)) Y.applyUpdate(server, take(m), 'conn');
      for (const c of [0, 1]) for (const m of toClient[c].splice(0)) Y.applyUpdate(docs[c], take(m), 'remote');
    }
  };
  return {
    holder: docs,
    sys: {
      write: (side, key, value) => maps[side].set(key, value),
      // Everything sent since the last sync, the writes' own messages to the server included.
      sync: () => {
        deliver();
        const moved = bytes - counted;
        counted = bytes;
        return moved;
      },
      idle: () => 0,
      setConnected: (up) => {
        // Client 0's updates made during the cut reached the server (and came back to it) before client 1 returns.
        if (up) deliver();
        counted = bytes;
        connected = up;
      },
      reconnect: () => {
        // y-websocket's handshake: each end sends sync step 1 (its state vector), the other answers step 2 (the diff).
        const before = bytes;
        let moved = 0;
        for (const [from, to, fromClient] of [
          [server, docs[1], false],
          [docs[1], server, true],
        ] as const) {
          const sv = ySyncMessage(SYNC_STEP1, Y.encodeStateVector(to));
          const diff = ySyncMessage(SYNC_STEP2, Y.encodeStateAsUpdate(from, take(sv)));
          moved += wsTlsBytes(sv, !fromClient) + wsTlsBytes(diff, fromClient);
          Y.applyUpdate(to, take(diff), 'remote');
        }
        deliver(); // what the server took from the client goes on to both clients, as it would
        counted = bytes;
        return moved + bytes - before;
      },
      identical: () => {
        const a = maps[0].toJSON();
        const b = maps[1].toJSON();
        const ka = Object.keys(a);
        return ka.length === Object.keys(b).length && ka.every((k) => Buffer.from(a[k]).equals(Buffer.from(b[k])));
      },
    },
  };
}

// ---------------------------------------------------------------- Automerge

type AmDoc = { m: Record<string, Uint8Array> };

function automerge(n: number, rng: Rng): { sys: System; holder: unknown } {
  let a = AM.change(AM.init<AmDoc>(), (d) => {
    d.m = {};
    for (let i = 0; i < n; i++) d.m[keyName(i)] = rng.bytes(rng.int(8, 64));
  });
  let b = AM.load<AmDoc>(AM.save(a));
  let sa = AM.initSyncState();
  let sb = AM.initSyncState();
  const docs = (): [AM.Doc<AmDoc>, AM.Doc<AmDoc>] => [a, b];
  const syncAll = (): number => {
    let bytes = 0;
    for (let round = 0; round < 1000; round++) {
      let moved = false;
      let msg: Uint8Array | null;
      [sa, msg] = AM.generateSyncMessage(a, sa);
      if (msg) {
        bytes += msg.length;
        [b, sb] = AM.receiveSyncMessage(b, sb, msg);
        moved = true;
      }
      [sb, msg] = AM.generateSyncMessage(b, sb);
      if (msg) {
        bytes += msg.length;
        [a, sa] = AM.receiveSyncMessage(a, sa, msg);
        moved = true;
      }
      if (!moved) return bytes;
    }
    throw new Error('automerge: sync did not settle');
  };
  syncAll();
  return {
    holder: { docs },
    sys: {
      write: (side, key, value) => {
        if (side === 0) a = AM.change(a, (d) => void (d.m[key] = value));
        else b = AM.change(b, (d) => void (d.m[key] = value));
      },
      sync: syncAll,
      setConnected: () => {},
      idle: () => 0,
      reconnect: syncAll,
      identical: () => AM.equals(a, b),
    },
  };
}

const SYSTEMS = { spook, yjs, 'yjs-websocket': yjsWebsocket, automerge } as const;

/** Simulated time between steady-state updates, by default: a busy pair, and one slower than any acknowledgement delay. */
export const DEFAULT_SPACING_MS = 1;
export const DEFAULT_SPARSE_SPACING_MS = 100;

/** U steady-state updates `spacingMs` apart (one in ten a concurrent write from both sides); bytes moved. */
function steady(sys: System, rng: Rng, n: number, updates: number, spacingMs: number): number {
  let bytes = 0;
  for (let i = 0; i < updates; i++) {
    const key = keyName(rng.int(0, n - 1));
    if (i % 10 === 9) {
      sys.write(0, key, rng.bytes(rng.int(8, 64)));
      sys.write(1, key, rng.bytes(rng.int(8, 64)));
    } else sys.write((i % 2) as 0 | 1, key, rng.bytes(rng.int(8, 64)));
    bytes += sys.sync();
    bytes += sys.idle(spacingMs);
  }
  return bytes;
}

/**
 * One (system, N, K) row: U steady-state updates `spacingMs` apart (timed: bytes and rate),
 * U more `sparseSpacingMs` apart (bytes only), then the cut, K updates and the catch-up.
 */
export function compareOne(
  system: keyof typeof SYSTEMS,
  n: number,
  k: number,
  updates: number,
  stateHeapBytes = -1,
  spacingMs = DEFAULT_SPACING_MS,
  sparseSpacingMs = DEFAULT_SPARSE_SPACING_MS,
): CompareRow {
  const rng = new Rng(n * 31 + k);
  const { sys, holder } = SYSTEMS[system](n, rng);
  const t0 = cpuMs();
  const bytes = steady(sys, rng, n, updates, spacingMs);
  const dt = (cpuMs() - t0) / 1000;
  const sparseBytes = steady(sys, rng, n, updates, sparseSpacingMs);
  // Cut, K updates on side 0, reconnect.
  sys.setConnected(false);
  for (let i = 0; i < k; i++) sys.write(0, keyName(rng.int(0, n - 1)), rng.bytes(rng.int(8, 64)));
  sys.setConnected(true);
  const c0 = performance.now();
  const catchUpBytes = sys.reconnect();
  const catchUpMs = performance.now() - c0;
  const identical = sys.identical();
  void holder;
  return {
    system,
    n,
    k,
    bytesPerUpdate: Number((bytes / (updates * 1.1)).toFixed(1)),
    bytesPerUpdateSparse: Number((sparseBytes / (updates * 1.1)).toFixed(1)),
    spacingMs,
    sparseSpacingMs,
    updatesPerSec: Math.round((updates * 1.1) / dt),
    catchUpBytes,
    catchUpMs: Number(catchUpMs.toFixed(1)),
    ...(sys.path ? { catchUpPath: sys.path() } : {}),
    stateHeapBytes,
    identical,
  };
}

/** One datagram of an update's exchange: who sent it, when (ms after the write), its size, and its messages with their sizes. */
export interface BreakdownDatagram {
  from: 'sequencer' | 'follower';
  atMs: number;
  bytes: number;
  messages: string[];
}

/**
 * What one Spook update puts on the wire, datagram by datagram (sealed as spookd seals them:
 * frame header and AEAD tag included), for a write at the sequencer and one at the follower of
 * a settled pair, with nothing else under way (the sparse regime: delayed acknowledgements
 * find no datagram to ride and leave at their deadline): the profile behind `bytesPerUpdate`.
 * Key `key-123`, a 36-byte value (the workload's mean).
 */
export function updateBreakdown(): Record<'sequencer' | 'follower', { bytes: number; datagrams: BreakdownDatagram[] }> {
  const world = new SimWorld(1, { loss: 0, dup: 0, reorder: 0, minDelayMs: 0, maxDelayMs: 0 });
  world.verify = false; // the simulator's own checks are not what is measured
  const plaintexts = new WeakMap<Uint8Array, Uint8Array>();
  const pairs = sealedPairs([{ name: 'm', kind: 'map' as const }], plaintexts);
  const eps = world.adopt(['A', 'B'], pairs);
  const [ra, rb] = pairs.map((p) => p.register('m'));
  const aligned = (): boolean =>
    pairs.every((p) => p.state === PairState.ENTANGLED) && ra.version === rb.version && ra.pendingCount + rb.pendingCount === 0;
  world.run(world.now + 60_000, aligned, 1);
  world.run(world.now + 1_500);
  let log: BreakdownDatagram[] = [];
  let t0 = 0;
  const send = world.net.send.bind(world.net);
  world.net.send = (now, from, to, d, deliver) => {
    const payload = plaintexts.get(d) ?? new Uint8Array(0);
    const { messages, raws } = decodeMessages(payload);
    log.push({
      from: from === 'A' ? 'sequencer' : 'follower',
      atMs: now - t0,
      bytes: d.length,
      messages: messages.map((m, i) => `${MsgType[m.type]}:${raws[i].length}`),
    });
    send(now, from, to, d, deliver);
  };
  const out = {} as ReturnType<typeof updateBreakdown>;
  for (const side of ['sequencer', 'follower'] as const) {
    log = [];
    t0 = world.now;
    eps[side === 'sequencer' ? 0 : 1].pair.propose(world.now, 'm', {
      op: DeltaOp.Set,
      key: enc.encode('key-123'),
      value: new Uint8Array(36),
    });
    for (const e of eps) world.drain(e);
    world.run(world.now + 60_000, aligned, 0);
    world.run(t0 + 50); // acknowledgements still owed leave by their deadline (maxAckDelayMs)
    out[side] = { bytes: log.reduce((n, d) => n + d.bytes, 0), datagrams: log };
  }
  world.net.send = send;
  return out;
}

/**
 * The same update through y-websocket: the Yjs update of one Y.Map set (key `key-123`, a
 * 36-byte value), as a y-protocols message, in a WebSocket frame, in a TLS 1.3 record, from
 * the writing client to the server and from the server to both clients.
 */
export function websocketBreakdown(): { bytes: number; messages: { hop: string; update: number; message: number; wire: number }[] } {
  const doc = new Y.Doc();
  doc.getMap<Uint8Array>('m').set('key-0', new Uint8Array(8));
  let update: Uint8Array = new Uint8Array(0);
  doc.on('update', (u: Uint8Array) => (update = u));
  doc.getMap<Uint8Array>('m').set('key-123', new Uint8Array(36));
  const m = ySyncMessage(SYNC_UPDATE, update);
  const messages = [
    { hop: 'client to server', fromClient: true },
    { hop: 'server to the writer (echo)', fromClient: false },
    { hop: 'server to the other client', fromClient: false },
  ].map((h) => ({ hop: h.hop, update: update.length, message: m.length, wire: wsTlsBytes(m, h.fromClient) }));
  return { bytes: messages.reduce((n, x) => n + x.wire, 0), messages };
}

export interface CompareOptions {
  sizes: number[];
  ks: number[];
  updates: number;
  /**
   * Untimed rounds of the workload per system before its rows (N = 1,000: one at each of `ks`,
   * then at K = 10), for at least this many ms: a row of a few hundred updates lasts
   * milliseconds, so without it the first rows time the JIT compiling each system's code rather
   * than the system (default 1,000; 0: none).
   */
  warmupMs?: number;
  /** Largest N each system is run at (Automerge and Yjs are slow or huge at 10^6 keys). */
  maxN: Record<string, number>;
  /** Simulated ms between steady-state updates (default DEFAULT_SPACING_MS), and for the sparse figure. */
  spacingMs?: number;
  sparseSpacingMs?: number;
}

/** Steady updates in the warm-up's rounds at the rows' K (at most: `updates` if fewer). */
const WARMUP_CATCHUP_UPDATES = 300;

/** The system instance kept alive through its warm-up and rows (see runCompare). */
const liveSystems: unknown[] = [];

export function runCompare(o: CompareOptions, progress?: (r: CompareRow) => void): CompareRow[] {
  const rows: CompareRow[] = [];
  for (const system of Object.keys(SYSTEMS) as (keyof typeof SYSTEMS)[]) {
    const maxN = o.maxN[system] ?? Infinity;
    const sizes = o.sizes.filter((n) => n <= maxN);
    // Memory first: its forced collections, run between the warm-up and a row, discarded the
    // warm-up's compiled code (below), so the row after each timed the JIT again.
    // y-websocket's replicas are Yjs's: its memory is the Yjs row's (the server's third doc aside).
    const mem = new Map(sizes.map((n) => [n, system === 'yjs-websocket' ? -1 : stateMemory(system, n)]));
    // One instance of the system lives through the warm-up and its rows, as in a long-lived
    // process: when a full collection finds no object of a hidden class alive, V8 drops the
    // class's map and deoptimizes all code compiled against it (--trace-deopt: "weak objects"),
    // so each row, whose instances are new, would otherwise begin by recompiling the system.
    if (sizes.length > 0) liveSystems.push(SYSTEMS[system](1000, new Rng(1)).holder);
    // The warm-up first catches up once at each of the rows' K (N = 1,000; a few steady updates:
    // the catch-up is what it is for): a row's catch-up (Spook's log diff, Yjs's state-vector
    // diff) runs code the steady state does not, and the first time it runs V8 deoptimises what
    // it compiled without it, so the row after the first one timed the recompilation
    // (docs/BENCHMARKS.md, "Issue 16: update rate, deopt fix"). Then the workload at K = 10
    // until `warmupMs` is spent, as before.
    const warmupMs = o.warmupMs ?? 1000;
    if (sizes.length > 0 && warmupMs > 0) {
      const t0 = cpuMs();
      for (const k of o.ks) compareOne(system, 1000, k, Math.min(o.updates, WARMUP_CATCHUP_UPDATES));
      while (cpuMs() - t0 < warmupMs) compareOne(system, 1000, 10, o.updates);
    }
    for (const n of sizes) {
      for (const k of o.ks) {
        const r = compareOne(system, n, k, o.updates, mem.get(n), o.spacingMs, o.sparseSpacingMs);
        if (system === 'yjs-websocket') {
          // Its rate and memory are the bare Yjs row's of this run (the network stack is not simulated in time).
          const y = rows.find((x) => x.system === 'yjs' && x.n === n && x.k === k);
          r.updatesPerSec = y?.updatesPerSec ?? -1;
          r.stateHeapBytes = y?.stateHeapBytes ?? -1;
        }
        rows.push(r);
        progress?.(r);
      }
    }
    liveSystems.length = 0;
  }
  return rows;
}
