/**
 * `spook-lab bench core`: the ESTP core's costs, each beside a baseline measured in the same run.
 *
 *  applyPerSec       set deltas/s through the follower's full path: frame decode, message
 *                    decode, precondition check, apply, O(1) hash update, log append.
 *  mapSetPerSec      a bare Map.set of the same keys and values (the baseline).
 *                    Both in CPU time, their rounds interleaved, best of seven each.
 *  bytesPerSetDelta  encoded size of one set delta (16-byte key, 32-byte value), and
 *                    wireBytesPerSetDelta: bytes on the wire per delta in full collapse frames.
 *  reentangleBytes   bytes on the wire, both directions, from link restore to re-entangled,
 *                    after the follower missed 100 updates on a 1,000,000-key map (log path);
 *  reconcileBytes    the same when the log has been compacted past the gap (range-hash path);
 *  fullStateBytes    what a full transfer of that state would put on the wire.
 */
import { DeltaOp } from '../wire/delta.js';
import { encodedDeltaLen } from '../wire/delta.js';
import { encodeFrame } from '../wire/header.js';
import { FrameType, MAX_PAYLOAD_LEN } from '../wire/constants.js';
import { HalfPair } from '../core/pair/halfpair.js';
import type { MapState } from '../core/register/map.js';
import { PairState } from '../core/pair/lifecycle.js';
import { SimWorld } from '../testing/sim/world.js';
import { Rng } from '../testing/sim/rng.js';

export interface CoreBenchResult {
  applyPerSec: number;
  mapSetPerSec: number;
  applyVsMapSet: number;
  bytesPerSetDelta: number;
  wireBytesPerSetDelta: number;
  stateKeys: number;
  missedUpdates: number;
  reentangleBytes: number;
  reentangleMs: number;
  reentangleMethod: string;
  reconcileBytes: number;
  reconcileMs: number;
  reconcileMethod: string;
  fullStateBytes: number;
  reentangleVsFull: number;
  reconcileVsFull: number;
  node: string;
}

function keyOf(i: number): Uint8Array {
  const k = new Uint8Array(16);
  new DataView(k.buffer).setUint32(12, i);
  k.set([0x6b, 0x65, 0x79, 0x2d], 0); // "key-"
  return k;
}

/** Sequencer-made collapse records for `n` set deltas, packed into Data frames. */
function makeFrames(n: number, keys: number, rng: Rng): Uint8Array[] {
  const seq = new HalfPair(
    {
      pairId: 1,
      localId: 1,
      peerId: 2,
      seed: 99,
      registers: [{ name: 'kv', kind: 'map', maxPending: n, log: { maxRecords: n, maxBytes: 1 << 30 } }],
    },
    0,
  );
  for (let i = 0; i < n; i++) seq.propose(0, 'kv', { op: DeltaOp.Set, key: keyOf(rng.int(0, keys - 1)), value: rng.bytes(32) });
  const r = seq.register('kv');
  r.collapse(0);
  const frames: Uint8Array[] = [];
  let parts: Uint8Array[] = [];
  let size = 0;
  const flush = (): void => {
    const payload = new Uint8Array(size);
    let o = 0;
    for (const p of parts) {
      payload.set(p, o);
      o += p.length;
    }
    frames.push(encodeFrame({ type: FrameType.Data, flags: 0, pairId: 1, packetNumber: frames.length }, payload));
    parts = [];
    size = 0;
  };
  for (let v = 1; v <= r.version; v++) {
    const rec = r.log.get(v)!;
    if (size + rec.encoded.length > MAX_PAYLOAD_LEN) flush();
    parts.push(rec.encoded);
    size += rec.encoded.length;
  }
  if (size > 0) flush();
  return frames;
}

/** CPU milliseconds of this process: on a shared machine, wall time also counts other processes' turns. */
function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** One follower fed every frame: the rate of one round (deltas/s of CPU). */
function applyRound(frames: Uint8Array[], n: number): number {
  const follower = new HalfPair(
    {
      pairId: 1,
      localId: 2,
      peerId: 1,
      seed: 99,
      registers: [{ name: 'kv', kind: 'map', log: { maxRecords: 1 << 16, maxBytes: 1 << 26 } }],
    },
    0,
  );
  const t0 = cpuMs();
  for (const f of frames) follower.handleDatagram(0, f);
  const dt = cpuMs() - t0;
  if (follower.register('kv').version === 0) throw new Error('bench: follower applied nothing');
  return n / (dt / 1000);
}

/** The baseline's Map key for a byte key: a 1:1 latin1 string, built outside the timed loop. */
const keyString = (key: Uint8Array): string => String.fromCharCode.apply(null, key as unknown as number[]);

function mapSetRound(ks: string[], vs: Uint8Array[]): number {
  const m = new Map<string, Uint8Array>();
  const t0 = cpuMs();
  for (let i = 0; i < ks.length; i++) m.set(ks[i], vs[i]);
  const dt = cpuMs() - t0;
  if (m.size === 0) throw new Error('unreachable');
  return ks.length / (dt / 1000);
}

/**
 * The apply rate and its baseline, rounds interleaved (apply, Map.set, apply, ...) so that both
 * see the same machine, best of seven each (the first rounds include JIT warm-up).
 */
function benchApply(n: number, keys: number): { applyPerSec: number; mapSetPerSec: number; wireBytesPerSetDelta: number } {
  const frames = makeFrames(n, keys, new Rng(1));
  const wire = frames.reduce((a, f) => a + f.length, 0);
  const rng = new Rng(1);
  const ks: string[] = [];
  const vs: Uint8Array[] = [];
  for (let i = 0; i < n; i++) {
    ks.push(keyString(keyOf(rng.int(0, keys - 1))));
    vs.push(rng.bytes(32));
  }
  let apply = 0;
  let mapSet = 0;
  for (let round = 0; round < 7; round++) {
    apply = Math.max(apply, applyRound(frames, n));
    mapSet = Math.max(mapSet, mapSetRound(ks, vs));
  }
  return { applyPerSec: Math.round(apply), mapSetPerSec: Math.round(mapSet), wireBytesPerSetDelta: wire / n };
}

/**
 * Two endpoints share a map of `keys` entries (preloaded identically at both ends), the link
 * is cut, the sequencer commits `missed` single-delta collapses, the link comes back: bytes
 * on the wire and simulated time until both ends are ENTANGLED at the same (version, hash).
 */
function benchReentangle(
  keys: number,
  missed: number,
  logRecords: number,
): { bytes: number; ms: number; method: string; fullStateBytes: number } {
  const world = new SimWorld(7, { loss: 0, dup: 0, reorder: 0, minDelayMs: 1, maxDelayMs: 1 });
  world.verify = false; // the simulator's own checks are not what is measured
  let method = 'none';
  world.onEvent = (ep, ev) => {
    if (ev.type === 'reentangled' && ep.name === 'B') method = ev.method;
  };
  const registers = [{ name: 'kv', kind: 'map' as const, log: { maxRecords: logRecords, maxBytes: 1 << 30 } }];
  // Preload before the pair's first exchange so both ends form aligned at the same (version, hash).
  const a = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 5, registers }, 0);
  const b = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 5, registers }, 0);
  const value = new Uint8Array(32).fill(7);
  for (const p of [a, b]) {
    p.register('kv').restore(1, (st) => {
      for (let i = 0; i < keys; i++) (st as MapState).put(keyOf(i), value, 1);
    });
  }
  const [ea, eb] = world.adopt(['A', 'B'], [a, b]);
  const aligned = (): boolean => {
    const ra = a.register('kv');
    const rb = b.register('kv');
    return (
      a.state === PairState.ENTANGLED &&
      b.state === PairState.ENTANGLED &&
      ra.version === rb.version &&
      ra.hash.hi === rb.hash.hi &&
      ra.hash.lo === rb.hash.lo
    );
  };
  if (!world.run(10_000, aligned)) throw new Error('bench: pair did not form');
  world.net.setLink('A', 'B', false);
  world.net.setLink('B', 'A', false);
  const rng = new Rng(3);
  for (let i = 0; i < missed; i++) {
    world.at(
      world.now + 10 + i * 10,
      () => void a.propose(world.now, 'kv', { op: DeltaOp.Set, key: keyOf(rng.int(0, keys - 1)), value: rng.bytes(32) }),
    );
  }
  world.run(world.now + missed * 10 + 7000); // past the silence timeout: both ends DECOHERENT
  if (a.state !== PairState.DECOHERENT || b.state !== PairState.DECOHERENT)
    throw new Error(`bench: expected decoherence, got ${a.state}/${b.state}`);
  const before = world.net.stats.bytesSent;
  const t0 = world.now;
  world.net.setLink('A', 'B', true);
  world.net.setLink('B', 'A', true);
  if (!world.run(world.now + 120_000, aligned, 1)) throw new Error('bench: did not re-entangle');
  void ea;
  void eb;
  return {
    bytes: world.net.stats.bytesSent - before,
    ms: Math.round(world.now - t0),
    method,
    fullStateBytes: a.register('kv').state.fullTransferBytes(),
  };
}

export function runCoreBench(opts: { keys: number; deltas: number; missed: number }): CoreBenchResult {
  const { applyPerSec, mapSetPerSec, wireBytesPerSetDelta } = benchApply(opts.deltas, 100_000);
  const log = benchReentangle(opts.keys, opts.missed, 65536);
  const recon = benchReentangle(opts.keys, opts.missed, 16);
  const bytesPerSetDelta = encodedDeltaLen({ op: DeltaOp.Set, key: new Uint8Array(16), value: new Uint8Array(32) });
  return {
    applyPerSec,
    mapSetPerSec,
    applyVsMapSet: Number((applyPerSec / mapSetPerSec).toFixed(4)),
    bytesPerSetDelta,
    wireBytesPerSetDelta: Number(wireBytesPerSetDelta.toFixed(2)),
    stateKeys: opts.keys,
    missedUpdates: opts.missed,
    reentangleBytes: log.bytes,
    reentangleMs: log.ms,
    reentangleMethod: log.method,
    reconcileBytes: recon.bytes,
    reconcileMs: recon.ms,
    reconcileMethod: recon.method,
    fullStateBytes: log.fullStateBytes,
    reentangleVsFull: Number((log.bytes / log.fullStateBytes).toExponential(3)),
    reconcileVsFull: Number((recon.bytes / recon.fullStateBytes).toExponential(3)),
    node: process.version,
  };
}
