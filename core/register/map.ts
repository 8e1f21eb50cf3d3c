/** The `map` register: key → bytes, each key with the register version that last wrote it. */
import { DeltaOp, RejectReason, type Delta, type SimpleDelta } from '../../wire/delta.js';
import { copyBytes, varintLen } from '../../wire/buffer.js';
import { Hash64, LITTLE_ENDIAN, entryLanes, entryWords, fmix32, laneSeeds, lanesOut, murmur3At } from './hash.js';
import type { StateBlock } from './state.js';
import { BUCKET_SHIFT, type KeyIndex } from './keyspace.js';
import { HEAD, KeyTable, entrySize } from './table.js';

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
const wireLen = (klen: number, vlen: number, version: number): number => varLen(klen) + klen + varLen(version) + varLen(vlen) + vlen;

/** varintLen, without its division loop for the lengths and versions below 2^28 that every write counts. */
const varLen = (v: number): number => (v < 0x80 ? 1 : v < 0x4000 ? 2 : v < 0x200000 ? 3 : v < 0x10000000 ? 4 : varintLen(v));

const TWO32 = 2 ** 32;

/** The largest buffer setAt keeps a view of between sets: what a map register may hold on to after a record. */
const KEEP_SOURCE = 1 << 16;

/** Scratch for hashing a key and value that do not sit side by side (entryOf). */
let scratch = new Uint8Array(256);

export class MapState implements StateBlock {
  readonly kind = 'map' as const;
  /**
   * The multiset hash as int32 bits [hi, lo]: a field holding a uint32 above 2^30 is a heap
   * number, and each write would allocate one; `hash` reads it out.
   */
  private readonly acc = new Int32Array(2);
  private readonly h = new Hash64();
  /**
   * The entries, in key-hash order, in one ordered open-addressing table (table.ts): a lookup
   * is one record and one arena load, a write copies the value into the arena and allocates no
   * object. Its per-bucket counts and hashes are the reconciliation index; snapshot() pins it.
   */
  private readonly t = new KeyTable();
  private readonly keySeed: number;
  private readonly seedHi: number;
  private readonly seedLo: number;
  private bytes = 0;
  /** The buffer setAt last read (a datagram) and a view of it: one DataView per datagram, for word loads at any offset. */
  private src: Uint8Array | undefined;
  private srcView: DataView | undefined;
  /** Writes so far (puts, applies, removes): lets a quota check tell whether the state moved under it. */
  writes = 0;

  constructor(readonly seed: number) {
    this.keySeed = fmix32(seed ^ 0x5350_0003);
    [this.seedHi, this.seedLo] = laneSeeds(seed);
  }

  /** The multiset hash of the entries (a view refreshed at each read: do not keep it across writes). */
  get hash(): Hash64 {
    this.h.hi = this.acc[0] >>> 0;
    this.h.lo = this.acc[1] >>> 0;
    return this.h;
  }

  /** Add (sign 1) or take out (sign -1) an entry hash given as int32 halves. */
  private addHash(hhi: number, hlo: number, sign: 1 | -1): void {
    const a = this.acc;
    const l = (a[1] >>> 0) + sign * (hlo >>> 0);
    a[1] = l | 0;
    a[0] = ((a[0] >>> 0) + sign * (hhi >>> 0) + (l >= TWO32 ? 1 : l < 0 ? -1 : 0)) | 0;
  }

  /** The slot of buf[off, off + len) as a key, or negative if absent. */
  private slotOf(buf: Uint8Array, off: number, len: number): number {
    return this.t.find((murmur3At(this.keySeed, buf, off, len) ^ 0x80000000) | 0, buf, off, len);
  }

  /** The entry of `key` (its own copies of key and value), or undefined. */
  get(key: Uint8Array): MapEntry | undefined {
    const i = this.slotOf(key, 0, key.length);
    return i >= 0 ? this.entryCopy(i) : undefined;
  }

  /** The version that last wrote `key`, 0 if absent (a cas reads only this). */
  versionOf(key: Uint8Array): number {
    const i = this.slotOf(key, 0, key.length);
    return i >= 0 ? this.t.version(i) : 0;
  }

  /** Bytes `key`'s entry takes (entryWireLen), -1 if absent (quota checks read only this). */
  entryLenOf(key: Uint8Array): number {
    return this.entryLenAt(key, 0, key.length);
  }

  /** entryLenOf for the key buf[off, off + len). */
  entryLenAt(buf: Uint8Array, off: number, len: number): number {
    const i = this.slotOf(buf, off, len);
    if (i < 0) return -1;
    return wireLen(this.t.keyLen(i), this.t.valueLen(i), this.t.version(i));
  }

  size(): number {
    return this.t.count;
  }

  /** An immutable key-hash-ordered view of the current entries (a reconciliation pin): O(4,096). */
  snapshot(version: number): KeyIndex {
    return { version, hash: { hi: this.acc[0] >>> 0, lo: this.acc[1] >>> 0 }, size: this.t.count, buckets: this.t.pin() };
  }

  /** Every entry in key-hash order, each with its own copies of key and value. */
  *values(): IterableIterator<MapEntry> {
    for (const i of this.t.occupiedSlots()) yield this.entryCopy(i);
  }

  private entryCopy(i: number): MapEntry {
    const t = this.t;
    const off = t.entryAt(i) + HEAD;
    const kend = off + t.keyLen(i);
    return {
      key: t.arena.slice(off, kend),
      value: t.arena.slice(kend, kend + t.valueLen(i)),
      version: t.version(i),
      keyHash: (t.biasedHash(i) ^ 0x80000000) >>> 0,
      hhi: t.hhi(i) >>> 0,
      hlo: t.hlo(i) >>> 0,
    };
  }

  keyHashOf(key: Uint8Array): number {
    return murmur3At(this.keySeed, key, 0, key.length) >>> 0;
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
        this.write(d.key, 0, d.key.length, d.value, 0, d.value.length, version);
        return;
      case DeltaOp.Del:
        this.remove(d.key);
        return;
      case DeltaOp.Append:
        throw new Error('append applied to a map register (check() rejects it)');
    }
  }

  /** A set whose key is buf[koff, koff + klen) and value buf[voff, voff + vlen) (a record read in place); both copied in. */
  setAt(buf: Uint8Array, koff: number, klen: number, voff: number, vlen: number, version: number): void {
    if (!LITTLE_ENDIAN) {
      this.write(buf, koff, klen, buf, voff, vlen, version);
      return;
    }
    let v = this.srcView;
    if (buf !== this.src || v === undefined) {
      v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
      // Kept for the next set only up to 64 KiB: a reassembled message may be megabytes, not to be held past its record.
      if (buf.byteLength <= KEEP_SOURCE) {
        this.src = buf;
        this.srcView = v;
      }
    }
    const t = this.t;
    const size = entrySize(klen, vlen);
    const at = t.reserve(size);
    t.copyIn(at + HEAD, buf, v, koff, klen);
    t.copyIn(at + HEAD + klen, buf, v, voff, vlen);
    this.place(at, size, klen, vlen, version);
  }

  /** Size the table for `n` entries before a bulk load of that many (KeyTable.reserveCount: loads in key-hash order). */
  reserveKeys(n: number): void {
    this.t.reserveCount(n);
  }

  /** Write an entry (collapse, reconciliation, full transfer): key and value are copied in. */
  put(key: Uint8Array, value: Uint8Array, version: number): MapEntry {
    const kh = this.write(key, 0, key.length, value, 0, value.length, version);
    return { key, value, version, keyHash: kh >>> 0, hhi: lanesOut.hi >>> 0, hlo: lanesOut.lo >>> 0 };
  }

  remove(key: Uint8Array): void {
    const kh = murmur3At(this.keySeed, key, 0, key.length);
    const t = this.t;
    const i = t.find((kh ^ 0x80000000) | 0, key, 0, key.length);
    if (i < 0) return;
    t.touch(kh >>> BUCKET_SHIFT);
    this.writes++;
    this.forget(kh >>> BUCKET_SHIFT, i);
    t.removeAt(i);
  }

  /**
   * Store key → value at `version`; returns the int32 key hash and leaves the entry's hash
   * halves in lanesOut. The key and value are copied into the arena (they may view a datagram)
   * first, at its end: the hashes and the key comparison then read aligned words. An overwrite
   * whose value is not larger moves the staged bytes into the old entry and gives the end back.
   */
  private write(kbuf: Uint8Array, koff: number, klen: number, vbuf: Uint8Array, voff: number, vlen: number, version: number): number {
    const t = this.t;
    const size = entrySize(klen, vlen);
    const at = t.reserve(size);
    copyBytes(t.arena, at + HEAD, kbuf, koff, klen);
    copyBytes(t.arena, at + HEAD + klen, vbuf, voff, vlen);
    return this.place(at, size, klen, vlen, version);
  }

  /** write() once the key and value are staged at the arena's end (at, `size` bytes reserved). */
  private place(at: number, size: number, klen: number, vlen: number, version: number): number {
    const t = this.t;
    let kh: number;
    if (LITTLE_ENDIAN) kh = entryWords(this.keySeed, this.seedHi, this.seedLo, t.a32, (at + HEAD) >>> 2, klen, vlen, version);
    else {
      kh = murmur3At(this.keySeed, t.arena, at + HEAD, klen);
      entryLanes(this.seedHi, this.seedLo, t.arena, at + HEAD, klen, vlen, version);
    }
    const hhi = lanesOut.hi;
    const hlo = lanesOut.lo;
    const bh = (kh ^ 0x80000000) | 0;
    const b = kh >>> BUCKET_SHIFT;
    t.touch(b);
    t.reserveEntry(); // slots move, the arena does not
    let i = LITTLE_ENDIAN ? t.findStaged(bh, (at + HEAD) >>> 2, klen) : t.find(bh, t.arena, at + HEAD, klen);
    this.writes++;
    if (i >= 0) {
      const old = entrySize(klen, t.valueLen(i));
      this.forget(b, i);
      if (old >= size) {
        // Not larger: into the old entry (its tail is garbage), and the staged copy given back.
        const to = t.entryAt(i);
        const w0 = klen >>> 2; // the key is the same: from the word where the value starts
        t.copyWords(to + HEAD + 4 * w0, at + HEAD + 4 * w0, ((klen + vlen + 3) >>> 2) - w0);
        t.unreserve(size);
        t.garbage += old - size;
        at = to;
      } else t.garbage += old; // larger: the staged copy is the entry (the arena repacks when garbage builds up)
    } else {
      i = -i - 1;
      t.openAt(i);
    }
    t.setAt(i, bh, at, klen, vlen, hhi, hlo, version);
    t.bucketAdd(b, hhi, hlo);
    this.addHash(hhi, hlo, 1);
    this.bytes += wireLen(klen, vlen, version);
    return kh;
  }

  /** Take the entry at slot `i` (bucket `b`) out of the hashes and the byte count. */
  private forget(b: number, i: number): void {
    const t = this.t;
    const hhi = t.hhi(i);
    const hlo = t.hlo(i);
    t.bucketSub(b, hhi, hlo);
    this.addHash(hhi, hlo, -1);
    this.bytes -= wireLen(t.keyLen(i), t.valueLen(i), t.version(i));
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
