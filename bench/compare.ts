/**
 * `spook-lab bench compare`: one workload through three systems in one process.
 *
 *  - Spook: two HalfPairs over an in-memory simulated link (no loss), a `map` register.
 *  - Yjs: two Y.Doc with a Y.Map; updates exchanged as Yjs update messages, catch-up by
 *    state vector → diff update, as its documentation describes.
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
import * as AM from '@automerge/automerge';
import { DeltaOp } from '../wire/delta.js';
import { decodeFrame } from '../wire/header.js';
import { MsgType, decodeMessages } from '../wire/messages.js';
import { HalfPair } from '../core/pair/halfpair.js';
import { PairState } from '../core/pair/lifecycle.js';
import type { MapState } from '../core/register/map.js';
import { SimWorld } from '../testing/sim/world.js';
import { Rng } from '../testing/sim/rng.js';

export interface CompareRow {
  system: 'spook' | 'yjs' | 'automerge';
  n: number;
  k: number;
  /** Bytes exchanged per steady-state update (both directions, all protocol overhead). */
  bytesPerUpdate: number;
  /** Steady-state updates per second of CPU time, write to applied at the other side. */
  updatesPerSec: number;
  /** Bytes and milliseconds for the cut-off side to catch up after K missed updates. */
  catchUpBytes: number;
  catchUpMs: number;
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

function spook(n: number, rng: Rng): { sys: System; holder: unknown } {
  const world = new SimWorld(1, { loss: 0, dup: 0, reorder: 0, minDelayMs: 0, maxDelayMs: 0 });
  const registers = [{ name: 'm', kind: 'map' as const, maxPending: 1_000_000, log: { maxRecords: 1_000_000, maxBytes: 1 << 30 } }];
  const a = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 3, registers }, 0);
  const b = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 3, registers }, 0);
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
  /** Drain both ends (sends what they have), run until aligned; bytes sent in all of it. */
  const run = (): number => {
    const before = world.net.stats.bytesSent;
    for (const e of eps) world.drain(e);
    if (!world.run(world.now + 600_000, aligned, 1)) throw new Error('spook: did not align');
    return world.net.stats.bytesSent - before;
  };
  run();
  return {
    holder: [a, b, world],
    sys: {
      write: (side, key, value) => void eps[side].pair.propose(world.now, 'm', { op: DeltaOp.Set, key: enc.encode(key), value }),
      sync: run,
      setConnected: (up) => {
        // Reconnecting: first let the cut last past the silence timeout (simulated time), so
        // both ends decohere and catch-up is a real re-entanglement, as after an outage.
        if (up) world.run(world.now + 6_000);
        world.net.setLink('A', 'B', up);
        world.net.setLink('B', 'A', up);
        if (!up) for (const e of eps) world.drain(e); // collapse now, nothing crosses
      },
      // Everything from reconnection until aligned: retransmissions, statuses, acks.
      reconnect: run,
      identical: () => aligned(),
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
      reconnect: syncAll,
      identical: () => AM.equals(a, b),
    },
  };
}

const SYSTEMS = { spook, yjs, automerge } as const;

/** One (system, N, K) row. */
export function compareOne(system: keyof typeof SYSTEMS, n: number, k: number, updates: number, stateHeapBytes = -1): CompareRow {
  const rng = new Rng(n * 31 + k);
  const { sys, holder } = SYSTEMS[system](n, rng);
  // Steady state, timed in CPU time (as bench core): on a shared machine wall time also counts other processes' turns.
  let bytes = 0;
  const t0 = cpuMs();
  for (let i = 0; i < updates; i++) {
    const key = keyName(rng.int(0, n - 1));
    if (i % 10 === 9) {
      sys.write(0, key, rng.bytes(rng.int(8, 64)));
      sys.write(1, key, rng.bytes(rng.int(8, 64)));
    } else sys.write((i % 2) as 0 | 1, key, rng.bytes(rng.int(8, 64)));
    bytes += sys.sync();
  }
  const dt = (cpuMs() - t0) / 1000;
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
    updatesPerSec: Math.round((updates * 1.1) / dt),
    catchUpBytes,
    catchUpMs: Number(catchUpMs.toFixed(1)),
    stateHeapBytes,
    identical,
  };
}

/** One datagram of an update's exchange: who sent it, its size, and its messages with their sizes. */
export interface BreakdownDatagram {
  from: 'sequencer' | 'follower';
  bytes: number;
  messages: string[];
}

/**
 * What one Spook update puts on the wire, datagram by datagram (frame header included), for a
 * write at the sequencer and one at the follower of a settled pair: the profile behind
 * `bytesPerUpdate`. Key `key-123`, a 36-byte value (the workload's mean).
 */
export function updateBreakdown(): Record<'sequencer' | 'follower', { bytes: number; datagrams: BreakdownDatagram[] }> {
  const world = new SimWorld(1, { loss: 0, dup: 0, reorder: 0, minDelayMs: 0, maxDelayMs: 0 });
  const registers = [{ name: 'm', kind: 'map' as const }];
  const pairs = [1, 2].map((id) => new HalfPair({ pairId: 1, localId: id, peerId: 3 - id, seed: 3, registers }, 0)) as [HalfPair, HalfPair];
  const eps = world.adopt(['A', 'B'], pairs);
  const [ra, rb] = pairs.map((p) => p.register('m'));
  const aligned = (): boolean =>
    pairs.every((p) => p.state === PairState.ENTANGLED) && ra.version === rb.version && ra.pendingCount + rb.pendingCount === 0;
  world.run(world.now + 60_000, aligned, 1);
  world.run(world.now + 1_000);
  let log: BreakdownDatagram[] = [];
  const send = world.net.send.bind(world.net);
  world.net.send = (now, from, to, d, deliver) => {
    const { messages, raws } = decodeMessages(decodeFrame(d).payload);
    log.push({
      from: from === 'A' ? 'sequencer' : 'follower',
      bytes: d.length,
      messages: messages.map((m, i) => `${MsgType[m.type]}:${raws[i].length}`),
    });
    send(now, from, to, d, deliver);
  };
  const out = {} as ReturnType<typeof updateBreakdown>;
  for (const side of ['sequencer', 'follower'] as const) {
    log = [];
    eps[side === 'sequencer' ? 0 : 1].pair.propose(world.now, 'm', {
      op: DeltaOp.Set,
      key: enc.encode('key-123'),
      value: new Uint8Array(36),
    });
    for (const e of eps) world.drain(e);
    world.run(world.now + 60_000, aligned, 1);
    out[side] = { bytes: log.reduce((n, d) => n + d.bytes, 0), datagrams: log };
  }
  world.net.send = send;
  return out;
}

export interface CompareOptions {
  sizes: number[];
  ks: number[];
  updates: number;
  /**
   * Untimed rounds of the workload (N = 1,000, K = 10) per system before its rows, for at least
   * this many ms: a row of a few hundred updates lasts milliseconds, so without it the first
   * rows time the JIT compiling each system's code rather than the system (default 1,000; 0: none).
   */
  warmupMs?: number;
  /** Largest N each system is run at (Automerge and Yjs are slow or huge at 10^6 keys). */
  maxN: Record<string, number>;
}

export function runCompare(o: CompareOptions, progress?: (r: CompareRow) => void): CompareRow[] {
  const rows: CompareRow[] = [];
  for (const system of Object.keys(SYSTEMS) as (keyof typeof SYSTEMS)[]) {
    if (o.sizes.some((n) => n <= (o.maxN[system] ?? Infinity))) {
      const t0 = cpuMs();
      while (cpuMs() - t0 < (o.warmupMs ?? 1000)) compareOne(system, 1000, 10, o.updates);
    }
    for (const n of o.sizes) {
      if (n > (o.maxN[system] ?? Infinity)) continue;
      const mem = stateMemory(system, n);
      for (const k of o.ks) {
        const r = compareOne(system, n, k, o.updates, mem);
        rows.push(r);
        progress?.(r);
      }
    }
  }
  return rows;
}
