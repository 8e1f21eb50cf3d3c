/** The `map` register: key → bytes, each key with the register version that last wrote it. */
import { DeltaOp, RejectReason, type Delta, type SimpleDelta } from '../../wire/delta.js';
import { varintLen } from '../../wire/buffer.js';
import { Hash64, entryLanes, fmix32, laneSeeds, lanesOut, murmur3At } from './hash.js';
import type { StateBlock } from './state.js';
import { BUCKET_SHIFT, HHI, HLO, KLEN, STRIDE, SortedKeys, VLEN, copyBytes, type Bucket, type KeyIndex } from './keyspace.js';

/** One entry as an object: what reads, pins and reconciliation hand out (the map itself keeps none). */
export interface MapEntry {
  readonly key: Uint8Array;
  readonly value: Uint8Array;
  /** Register version of the collapse that last wrote this key (like etcd's mod_revision). */
  readonly version: number;
  /** Seeded Murmur3 of the key: the entry's position in the reconciliation key space. */
  readonly keyHash: number;
  readonly hhi: number;
  readonly hlo: number;
}

/** Bytes an entry takes in reconciliation and snapshot messages (entryWireLen from its lengths). */
const wireLen = (klen: number, vlen: number, version: number): number =>
  varintLen(klen) + klen + varintLen(version) + varintLen(vlen) + vlen;

/** Scratch for hashing a key and value that do not sit side by side (entryOf). */
let scratch = new Uint8Array(256);

export class MapState implements StateBlock {
  readonly kind = 'map' as const;
  readonly hash = new Hash64();
  /**
   * The entries, in key-hash order, as struct-of-arrays buckets (keyspace.ts): a lookup is a
   * binary search in one bucket, a write copies the value into the bucket's arena and
   * allocates no object. The same buckets are the reconciliation index (snapshot()).
   */
  private readonly keys = new SortedKeys();
  private readonly keySeed: number;
  private readonly seedHi: number;
  private readonly seedLo: number;
  private bytes = 0;
  /** Writes so far (puts, applies, removes): lets a quota check tell whether the state moved under it. */
  writes = 0;

  constructor(readonly seed: number) {
    this.keySeed = fmix32(seed ^ 0x5350_0003);
    [this.seedHi, this.seedLo] = laneSeeds(seed);
  }

  /** The entry of `key` (its own copies of key and value), or undefined. */
  get(key: Uint8Array): MapEntry | undefined {
    const kh = this.kh(key);
    const b = this.keys.read(kh >>> BUCKET_SHIFT);
    const i = b ? b.find(kh, key) : -1;
    return i >= 0 ? b!.entryCopy(i) : undefined;
  }

  /** The version that last wrote `key`, 0 if absent (a cas reads only this). */
  versionOf(key: Uint8Array): number {
    const kh = this.kh(key);
    const b = this.keys.read(kh >>> BUCKET_SHIFT);
    const i = b ? b.find(kh, key) : -1;
    return i >= 0 ? b!.version(i) : 0;
  }

  /** Bytes `key`'s entry takes (entryWireLen), -1 if absent (quota checks read only this). */
  entryLenOf(key: Uint8Array): number {
    const kh = this.kh(key);
    const b = this.keys.read(kh >>> BUCKET_SHIFT);
    const i = b ? b.find(kh, key) : -1;
    return i >= 0 ? wireLen(b!.keyLen(i), b!.valueLen(i), b!.version(i)) : -1;
  }

  size(): number {
    return this.keys.count;
  }

  /** An immutable key-hash-ordered view of the current entries (a reconciliation pin): O(4,096). */
  snapshot(version: number): KeyIndex {
    return this.keys.snapshot(version, this.hash);
  }

  /** Every entry in key-hash order, each with its own copies of key and value. */
  *values(): IterableIterator<MapEntry> {
    for (const b of this.keys.all()) for (let i = 0; i < b.n; i++) yield b.entryCopy(i);
  }

  keyHashOf(key: Uint8Array): number {
    return murmur3At(this.keySeed, key, 0, key.length) >>> 0;
  }

  /** keyHashOf as an int32 (the same bits), as the buckets keep it. */
  private kh(key: Uint8Array): number {
    return murmur3At(this.keySeed, key, 0, key.length);
  }

  check(d: Delta): RejectReason | 0 {
    return d.op === DeltaOp.Txn ? (this.txnFailure(d.ops)?.reason ?? 0) : this.checkOne(d);
  }

  /**
   * The first op of a txn that fails, and why; undefined if all pass. Keys are distinct (the
   * decoder and validateDelta refuse repeats), so each cas reads the register as before the txn.
   */
  txnFailure(ops: readonly SimpleDelta[]): { op: number; reason: RejectReason } | undefined {
    for (let i = 0; i < ops.length; i++) {
      const reason = this.checkOne(ops[i]);
      if (reason !== 0) return { op: i, reason };
    }
    return undefined;
  }

  private checkOne(d: SimpleDelta): RejectReason | 0 {
    switch (d.op) {
      case DeltaOp.Set:
      case DeltaOp.Del:
        return 0;
      case DeltaOp.Cas:
        return this.versionOf(d.key) === d.expect ? 0 : RejectReason.CasMismatch;
      case DeltaOp.Append:
        return RejectReason.WrongKind;
    }
  }

  apply(d: Delta, version: number): void {
    switch (d.op) {
      case DeltaOp.Txn:
        // In order at one version: the hash is the same as the ops applied one by one.
        for (const o of d.ops) this.apply(o, version);
        return;
      case DeltaOp.Set:
      case DeltaOp.Cas:
        this.write(d.key, d.value, version, this.kh(d.key));
        return;
      case DeltaOp.Del:
        this.remove(d.key);
        return;
      case DeltaOp.Append:
        throw new Error('append applied to a map register (check() rejects it)');
    }
  }

  /** Write an entry (collapse, reconciliation, full transfer): key and value are copied in. */
  put(key: Uint8Array, value: Uint8Array, version: number): MapEntry {
    const kh = this.kh(key);
    this.write(key, value, version, kh);
    return { key, value, version, keyHash: kh >>> 0, hhi: lanesOut.hi >>> 0, hlo: lanesOut.lo >>> 0 };
  }

  remove(key: Uint8Array): void {
    const kh = this.kh(key);
    const bi = kh >>> BUCKET_SHIFT;
    const r = this.keys.read(bi);
    if (!r || r.find(kh, key) < 0) return;
    const b = this.keys.writable(bi);
    const i = b.find(kh, key);
    this.writes++;
    this.forget(b, i);
    b.removeAt(i);
    this.keys.count--;
  }

  /** Store key → value at `version` (int32 key hash `kh`); leaves the entry's hash halves in lanesOut. */
  private write(key: Uint8Array, value: Uint8Array, version: number, kh: number): void {
    const b = this.keys.writable(kh >>> BUCKET_SHIFT);
    let i = b.find(kh, key);
    this.writes++;
    const klen = key.length;
    const vlen = value.length;
    let off: number;
    if (i >= 0) {
      this.forget(b, i);
      off = b.offset(i);
      const old = klen + b.valueLen(i);
      if (old < klen + vlen) {
        // Larger: append a fresh copy (the arena repacks when garbage builds up).
        off = b.reserve(klen + vlen);
        b.garbage += old;
        copyBytes(b.arena, off, key, 0, klen);
      } else b.garbage += old - klen - vlen; // the same size or smaller: in place, its tail is garbage
    } else {
      i = -i - 1;
      off = b.reserve(klen + vlen);
      copyBytes(b.arena, off, key, 0, klen);
      b.openAt(i);
      this.keys.count++;
    }
    copyBytes(b.arena, off + klen, value, 0, vlen);
    entryLanes(this.seedHi, this.seedLo, b.arena, off, klen, vlen, version);
    const hhi = lanesOut.hi;
    const hlo = lanesOut.lo;
    b.setAt(i, kh, hhi, hlo, off, klen, vlen, version);
    b.addHash(hhi, hlo);
    this.hash.addBits(hhi, hlo);
    this.bytes += wireLen(klen, vlen, version);
  }

  /** Take entry `i` of writable bucket `b` out of the hashes and the byte count. */
  private forget(b: Bucket, i: number): void {
    const w = i * STRIDE;
    const m = b.meta;
    const hhi = m[w + HHI];
    const hlo = m[w + HLO];
    b.subHash(hhi, hlo);
    this.hash.subBits(hhi, hlo);
    this.bytes -= wireLen(m[w + KLEN], m[w + VLEN], b.version(i));
  }

  /** The entry with its hashes computed, without storing it (reconciliation stages with this). */
  entryOf(key: Uint8Array, value: Uint8Array, version: number, keyHash = this.keyHashOf(key)): MapEntry {
    const n = key.length + value.length;
    if (scratch.length < n) scratch = new Uint8Array(Math.max(n, scratch.length * 2));
    scratch.set(key, 0);
    scratch.set(value, key.length);
    entryLanes(this.seedHi, this.seedLo, scratch, 0, key.length, value.length, version);
    return { key, value, version, keyHash, hhi: lanesOut.hi >>> 0, hlo: lanesOut.lo >>> 0 };
  }

  fullTransferBytes(): number {
    return this.bytes;
  }
}

/** Bytes an entry takes in reconciliation and snapshot messages: key, version, value. */
export function entryWireLen(e: { key: Uint8Array; value: Uint8Array; version: number }): number {
  return wireLen(e.key.length, e.value.length, e.version);
}
