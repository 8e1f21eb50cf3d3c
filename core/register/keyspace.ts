/**
 * The reconciliation key space (docs/PROTOCOL.md §8.2): map entries ordered by their
 * 32-bit seeded key hash, cut into a 16-ary tree (4 bits per level, 8 levels). A node's
 * summary is (entry count, multiset hash of its entries), so equal subtrees are skipped
 * and the bytes exchanged grow with the differences, not with the state.
 *
 * A pin (KeyIndex) holds the 4,096 buckets, the depth-3 nodes, each a key-hash-sorted
 * Int32Array of fixed records (key hash, entry hash, arena offset, lengths, version) with the
 * keys and values in one byte arena. A map's live entries are in its table (table.ts), whose
 * slots are in the same order: a pin is O(buckets) to take, each bucket copied out of the table
 * when the pin first reads it or before the table next writes it. A pin's bucket is never
 * written, so entries read from it may be views into its arena. SortedKeys builds buckets
 * directly (buildIndex: tests and tools).
 */
import { Hash64 } from './hash.js';
import { copyBytes, varintLen } from '../../wire/buffer.js';
import type { MapEntry } from './map.js';
import { RECON_FANOUT, RECON_MAX_DEPTH, type ReconChild } from '../../wire/messages.js';

/** Depth of the tree whose nodes are the buckets; 16^3 = 4,096 buckets. */
export const BUCKET_DEPTH = 3;
export const BUCKETS = RECON_FANOUT ** BUCKET_DEPTH;
export const BUCKET_SHIFT = 32 - 4 * BUCKET_DEPTH;

/**
 * Per-entry int32 words of Bucket.meta, one 32-byte record per entry (one or two cache lines
 * per lookup): key hash (biased by 2^31, so signed order is unsigned order), entry hash (hi,
 * lo), arena offset, key length, value length, version (low, high 32 bits). Hashes stay int32
 * on the hot path: V8 keeps int32s unboxed, where a uint32 above 2^31 is a heap number.
 */
export const STRIDE = 8;
export const HHI = 1;
export const HLO = 2;
export const OFF = 3;
export const KLEN = 4;
export const VLEN = 5;
const VLO = 6;
const VHI = 7;
const TWO32 = 2 ** 32;

/** An entry read in place: key arena[keyOff, keyOff + klen), the value right after it. */
export type EntryVisitor = (arena: Uint8Array, keyOff: number, klen: number, vlen: number, version: number) => void;

/** Where a pin's bucket not copied yet comes from (table.ts): it copies the bucket out of the live table, or reads it in place. */
interface BucketSource {
  copyBucket(b: number): { n: number; meta: Int32Array; arena: Uint8Array };
  visitBucket(b: number, visit: EntryVisitor): number;
}

/**
 * One depth-3 node's entries, sorted by keyHash (unsigned); equal hashes in insertion order.
 * A map's pin holds these (table.ts), each copied out of the live table when first read or
 * before the table writes that bucket (`pending` until then); buildIndex builds them directly.
 */
export class Bucket {
  n = 0;
  private _meta: Int32Array;
  private _arena: Uint8Array;
  /** A pin's bucket not copied out yet: the table and bucket it comes from, and the pin's bucket array (kept alive with it). */
  private src: BucketSource | undefined;
  private srcBucket = 0;
  private owner: unknown;
  /** Arena bytes in use, of which `garbage` belong to overwritten or removed entries. */
  used = 0;
  garbage = 0;
  /** Multiset hash of the bucket's entries (uint32 halves). */
  hashHi = 0;
  hashLo = 0;

  constructor(
    /** Snapshot generation this bucket was created in; older buckets are shared and cloned before a write. */
    public gen: number,
    cap = 8,
    arenaCap = 256,
  ) {
    this._meta = new Int32Array(cap * STRIDE);
    this._arena = new Uint8Array(arenaCap);
  }

  /** A pin's bucket `b` of `src` with its count and hash, copied out later (load). */
  static pending(src: BucketSource, b: number, n: number, hashHi: number, hashLo: number, owner: unknown): Bucket {
    const x = new Bucket(0, 0, 0);
    x.n = n;
    x.hashHi = hashHi;
    x.hashLo = hashLo;
    x.src = src;
    x.srcBucket = b;
    x.owner = owner;
    return x;
  }

  /** Not copied out of the live table yet. */
  get pending(): boolean {
    return this.src !== undefined;
  }

  /**
   * Called, once, instead of copying the entries out when the table is about to write this bucket
   * (table.ts touch): a background snapshot reads them in place then (visitSource) and drops the
   * bucket, instead of holding a copy until it gets there.
   */
  onTouch: (() => void) | undefined = undefined;

  /** Copy the entries out of the live table (before it writes this bucket, or at the first read). */
  load(): void {
    const c = this.src!.copyBucket(this.srcBucket);
    if (c.n !== this.n) throw new Error(`pin bucket ${this.srcBucket}: ${c.n} entries, ${this.n} expected`);
    this._meta = c.meta;
    this._arena = c.arena;
    this.used = c.arena.length;
    this.src = undefined;
    this.owner = undefined;
  }

  /** A pending bucket's entries read in place from the live table (not written since the pin). */
  visitSource(visit: EntryVisitor): void {
    const n = this.src!.visitBucket(this.srcBucket, visit);
    if (n !== this.n) throw new Error(`pin bucket ${this.srcBucket}: ${n} entries, ${this.n} expected`);
  }

  /** The same entries as `other` (a bucket of another pin loaded at the same moment). */
  adopt(other: Bucket): void {
    this._meta = other.meta;
    this._arena = other.arena;
    this.used = other.used;
    this.src = undefined;
    this.owner = undefined;
  }

  get meta(): Int32Array {
    if (this.src !== undefined) this.load();
    return this._meta;
  }

  set meta(m: Int32Array) {
    this._meta = m;
  }

  get arena(): Uint8Array {
    if (this.src !== undefined) this.load();
    return this._arena;
  }

  set arena(a: Uint8Array) {
    this._arena = a;
  }

  get length(): number {
    return this.n;
  }

  get hash(): { hi: number; lo: number } {
    return { hi: this.hashHi, lo: this.hashLo };
  }

  /** Add (sign 1) or take out (sign -1) an entry hash given as int32 halves. */
  addHash(hhi: number, hlo: number): void {
    const l = this.hashLo + (hlo >>> 0);
    this.hashLo = l >>> 0;
    this.hashHi = (this.hashHi + (hhi >>> 0) + (l >= TWO32 ? 1 : 0)) >>> 0;
  }

  subHash(hhi: number, hlo: number): void {
    const l = this.hashLo - (hlo >>> 0);
    this.hashLo = l >>> 0;
    this.hashHi = (this.hashHi - (hhi >>> 0) - (l < 0 ? 1 : 0)) >>> 0;
  }

  keyHash(i: number): number {
    return (this.meta[i * STRIDE] ^ 0x80000000) >>> 0;
  }

  hhi(i: number): number {
    return this.meta[i * STRIDE + HHI] >>> 0;
  }

  hlo(i: number): number {
    return this.meta[i * STRIDE + HLO] >>> 0;
  }

  offset(i: number): number {
    return this.meta[i * STRIDE + OFF];
  }

  keyLen(i: number): number {
    return this.meta[i * STRIDE + KLEN];
  }

  valueLen(i: number): number {
    return this.meta[i * STRIDE + VLEN];
  }

  version(i: number): number {
    const w = i * STRIDE;
    const hi = this.meta[w + VHI];
    // As EntryTable.version: a small integer below 2^32, not a heap number from float arithmetic.
    return hi === 0 ? this.meta[w + VLO] >>> 0 : (this.meta[w + VLO] >>> 0) + hi * TWO32;
  }

  /** First position whose keyHash is ≥ h (an unsigned hash, or 2^32 for the end). */
  lowerBound(h: number): number {
    return h >= TWO32 ? this.n : this.lowerBoundBiased((h ^ 0x80000000) | 0);
  }

  /**
   * lowerBound for a biased key hash (int32). Key hashes are uniform within a bucket, so the
   * low 20 bits say about where `bh` falls: start there and step (one cache line, where a
   * binary search over the 32-byte records touches five at 24 entries); after a few steps
   * (skewed hashes, a bound outside the bucket) finish by binary search in what is left.
   */
  lowerBoundBiased(bh: number): number {
    const m = this.meta;
    const n = this.n;
    let i = Math.floor(((bh & 0xfffff) * n) / 0x100000);
    let lo = 0;
    let hi = n;
    if (i < n && m[i * STRIDE] < bh) {
      for (let step = 0; ; step++) {
        i++;
        if (i === n || m[i * STRIDE] >= bh) return i;
        if (step === 4) break;
      }
      lo = i + 1; // m[i] < bh: the bound is above i
    } else {
      for (let step = 0; ; step++) {
        if (i === 0 || m[(i - 1) * STRIDE] < bh) return i;
        i--;
        if (step === 4) break;
      }
      hi = i; // m[i] >= bh: the bound is at or below i
    }
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (m[mid * STRIDE] < bh) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /** The position of `key` (int32 key hash `kh`), or -(insertion point) - 1 if absent. */
  find(kh: number, key: Uint8Array): number {
    const m = this.meta;
    const a = this.arena;
    const bh = (kh ^ 0x80000000) | 0;
    const klen = key.length;
    let i = this.lowerBoundBiased(bh);
    for (; i < this.n; i++) {
      const w = i * STRIDE;
      if (m[w] !== bh) break;
      if (m[w + KLEN] !== klen) continue;
      const off = m[w + OFF];
      let j = 0;
      while (j < klen && a[off + j] === key[j]) j++;
      if (j === klen) return i;
    }
    return -i - 1;
  }

  /** The entry at `i` with its key and value viewing the arena: only for a bucket that is no longer written. */
  entry(i: number): MapEntry {
    const w = i * STRIDE;
    const m = this.meta;
    const off = m[w + OFF];
    const kend = off + m[w + KLEN];
    return {
      key: this.arena.subarray(off, kend),
      value: this.arena.subarray(kend, kend + m[w + VLEN]),
      version: this.version(i),
      keyHash: this.keyHash(i),
      hhi: m[w + HHI] >>> 0,
      hlo: m[w + HLO] >>> 0,
    };
  }

  /** The entry at `i` with its own copies of key and value (safe to keep across writes). */
  entryCopy(i: number): MapEntry {
    const e = this.entry(i);
    return { ...e, key: e.key.slice(), value: e.value.slice() };
  }

  /** Bytes entry `i` takes in reconciliation and snapshot messages (entryWireLen without building the entry). */
  wireLen(i: number): number {
    const w = i * STRIDE;
    const klen = this.meta[w + KLEN];
    const vlen = this.meta[w + VLEN];
    return varintLen(klen) + klen + varintLen(this.version(i)) + varintLen(vlen) + vlen;
  }

  /** Room for `len` arena bytes at the end; compacts or grows the arena. Returns the offset. */
  reserve(len: number): number {
    if (this.used + len > this.arena.length) this.makeRoom(len);
    const off = this.used;
    this.used += len;
    return off;
  }

  private makeRoom(len: number): void {
    const live = this.used - this.garbage;
    // Compact in place when a quarter is garbage and the bytes fit; else double, quadruple below 1 KiB (few
    // reallocations: each costs a backing store; the sizes reached stay the same powers of two).
    const size = this.arena.length;
    const cap = this.garbage >= size >>> 2 && live + len <= size ? size : Math.max(live + len, size * (size < 1024 ? 4 : 2));
    if (this.garbage === 0) {
      const dst = new Uint8Array(cap);
      dst.set(this.arena.subarray(0, this.used));
      this.arena = dst;
    } else this.repack(cap);
  }

  /** Copy the live bytes into a fresh arena of `cap` bytes, in entry order. */
  private repack(cap: number): void {
    const src = this.arena;
    const dst = new Uint8Array(cap);
    const m = this.meta;
    let at = 0;
    for (let i = 0; i < this.n; i++) {
      const w = i * STRIDE;
      const off = m[w + OFF];
      const len = m[w + KLEN] + m[w + VLEN];
      copyBytes(dst, at, src, off, len);
      m[w + OFF] = at;
      at += len;
    }
    this.arena = dst;
    this.used = at;
    this.garbage = 0;
  }

  /** Open position `pos` for a new entry (shifting the later ones). */
  openAt(pos: number): void {
    if (this.n * STRIDE === this.meta.length) {
      // Quadruple while small: a bucket of a mid-sized map reaches its ~20-30 entries in one step, not two (same final size).
      const meta = new Int32Array(this.n * (this.n < 16 ? 4 : 2) * STRIDE);
      meta.set(this.meta);
      this.meta = meta;
    }
    if (pos < this.n) this.meta.copyWithin((pos + 1) * STRIDE, pos * STRIDE, this.n * STRIDE);
    this.n++;
  }

  /** Set every field of the entry at `i` (hashes as int32 or uint32: the same bits). */
  setAt(i: number, kh: number, hhi: number, hlo: number, off: number, klen: number, vlen: number, version: number): void {
    const w = i * STRIDE;
    const m = this.meta;
    m[w] = kh ^ 0x80000000;
    m[w + HHI] = hhi;
    m[w + HLO] = hlo;
    m[w + OFF] = off;
    m[w + KLEN] = klen;
    m[w + VLEN] = vlen;
    m[w + VLO] = version | 0;
    m[w + VHI] = (version / TWO32) | 0;
  }

  removeAt(i: number): void {
    const w = i * STRIDE;
    this.garbage += this.meta[w + KLEN] + this.meta[w + VLEN];
    this.meta.copyWithin(w, w + STRIDE, this.n * STRIDE);
    this.n--;
    if (this.n === 0) {
      this.used = 0;
      this.garbage = 0;
    }
  }

  /** A writable copy for generation `gen` (copy-on-write after a snapshot), its arena packed. */
  clone(gen: number): Bucket {
    const live = this.used - this.garbage;
    const b = new Bucket(gen, Math.max(4, Math.ceil(this.n * 1.25)), Math.max(64, Math.ceil(live * 1.25)));
    b.hashHi = this.hashHi;
    b.hashLo = this.hashLo;
    b.meta.set(this.meta.subarray(0, this.n * STRIDE));
    b.n = this.n;
    const src = this.arena;
    let at = 0;
    for (let i = 0; i < this.n; i++) {
      const w = i * STRIDE;
      const off = b.meta[w + OFF];
      const len = b.meta[w + KLEN] + b.meta[w + VLEN];
      copyBytes(b.arena, at, src, off, len);
      b.meta[w + OFF] = at;
      at += len;
    }
    b.used = at;
    return b;
  }
}

/** An immutable view of a map's entries in key-hash order at one version (a pin). */
export interface KeyIndex {
  version: number;
  hash: { hi: number; lo: number };
  size: number;
  buckets: readonly (Bucket | undefined)[];
}

export const bucketOf = (keyHash: number): number => keyHash >>> BUCKET_SHIFT;

/** Entries in key-hash order in copy-on-write buckets: buildIndex (tests, tools). A map keeps its own in its table (table.ts). */
export class SortedKeys {
  private buckets: (Bucket | undefined)[] | undefined;
  private gen = 1;
  count = 0;

  get size(): number {
    return this.count;
  }

  /** Bucket `i` for reading (possibly shared with a snapshot: do not write it). */
  read(i: number): Bucket | undefined {
    return this.buckets?.[i];
  }

  /** Bucket `i` for writing: created, or cloned if a snapshot shares it. */
  writable(i: number): Bucket {
    this.buckets ??= new Array<Bucket | undefined>(BUCKETS);
    const b = this.buckets[i];
    if (b === undefined) return (this.buckets[i] = new Bucket(this.gen));
    if (b.gen === this.gen) return b;
    return (this.buckets[i] = b.clone(this.gen));
  }

  /** Every non-empty bucket, in key-hash order. */
  *all(): IterableIterator<Bucket> {
    if (this.buckets) for (const b of this.buckets) if (b !== undefined && b.n > 0) yield b;
  }

  /** Add an entry with its hashes as given (tests and tools index arbitrary entries). */
  insert(e: MapEntry): void {
    const b = this.writable(e.keyHash >>> BUCKET_SHIFT);
    const at = b.lowerBound(e.keyHash + 1);
    const len = e.key.length + e.value.length;
    const off = b.reserve(len);
    b.arena.set(e.key, off);
    b.arena.set(e.value, off + e.key.length);
    b.openAt(at);
    b.setAt(at, e.keyHash, e.hhi, e.hlo, off, e.key.length, e.value.length, e.version);
    b.addHash(e.hhi, e.hlo);
    this.count++;
  }

  /** A consistent view at this moment: O(4,096); later writes copy the buckets they touch. */
  snapshot(version: number, hash: { hi: number; lo: number }): KeyIndex {
    const buckets = this.buckets ? this.buckets.slice() : [];
    if (this.buckets) this.gen++;
    return { version, hash: { hi: hash.hi, lo: hash.lo }, size: this.count, buckets };
  }
}

/** An index of arbitrary entries (tests, tools); a map's own index comes from MapState.snapshot(). */
export function buildIndex(values: Iterable<MapEntry>, version: number, hash: { hi: number; lo: number }): KeyIndex {
  const keys = new SortedKeys();
  for (const e of values) keys.insert(e);
  return keys.snapshot(version, hash);
}

/** The key-hash range [start, end) covered by `prefix` at `depth`. */
export function prefixRange(depth: number, prefix: number): [number, number] {
  const width = 2 ** (32 - 4 * depth);
  const start = prefix * width;
  return [start, start + width];
}

export function prefixContains(depth: number, prefix: number, keyHash: number): boolean {
  const [s, e] = prefixRange(depth, prefix);
  return keyHash >= s && keyHash < e;
}

/**
 * Visit the entries under `prefix` at `depth` in key-hash order; stop early when `visit`
 * returns false. A node at depth ≤ 3 spans whole buckets, a deeper one part of one bucket.
 */
export function forEachUnder(index: KeyIndex, depth: number, prefix: number, visit: (e: MapEntry) => boolean | void): void {
  const [s, e] = prefixRange(depth, prefix);
  if (depth <= BUCKET_DEPTH) {
    const first = bucketOf(s);
    const last = bucketOf(e - 1);
    for (let i = first; i <= last; i++) {
      const b = index.buckets[i];
      if (b) for (let j = 0; j < b.n; j++) if (visit(b.entry(j)) === false) return;
    }
    return;
  }
  const b = index.buckets[bucketOf(s)];
  if (!b) return;
  for (let i = b.lowerBound(s); i < b.n && b.keyHash(i) < e; i++) if (visit(b.entry(i)) === false) return;
}

export function entriesUnder(index: KeyIndex, depth: number, prefix: number): MapEntry[] {
  const out: MapEntry[] = [];
  forEachUnder(index, depth, prefix, (e) => void out.push(e));
  return out;
}

/** Entries under a node; O(buckets spanned) at depth ≤ 3 (bucket counts), else O(log b). */
export function countUnder(index: KeyIndex, depth: number, prefix: number): number {
  const [s, e] = prefixRange(depth, prefix);
  if (depth <= BUCKET_DEPTH) {
    let n = 0;
    for (let i = bucketOf(s); i <= bucketOf(e - 1); i++) n += index.buckets[i]?.n ?? 0;
    return n;
  }
  const b = index.buckets[bucketOf(s)];
  return b ? b.lowerBound(e) - b.lowerBound(s) : 0;
}

/** Every entry in key-hash order. */
export function* allEntries(index: KeyIndex): IterableIterator<MapEntry> {
  for (const b of index.buckets) if (b) for (let i = 0; i < b.n; i++) yield b.entry(i);
}

/** Summaries of the 16 children of `prefix` at `depth`: from bucket sums above the buckets, from entries below. */
export function childrenOf(index: KeyIndex, depth: number, prefix: number): ReconChild[] {
  if (depth >= RECON_MAX_DEPTH) throw new RangeError(`depth ${depth} has no children`);
  const sums = Array.from({ length: RECON_FANOUT }, () => ({ count: 0, h: new Hash64() }));
  if (depth < BUCKET_DEPTH) {
    const per = RECON_FANOUT ** (BUCKET_DEPTH - depth - 1);
    const base = prefix * RECON_FANOUT * per;
    for (let c = 0; c < RECON_FANOUT; c++) {
      for (let i = base + c * per; i < base + (c + 1) * per; i++) {
        const b = index.buckets[i];
        if (!b) continue;
        sums[c].count += b.n;
        sums[c].h.add(b.hashHi, b.hashLo);
      }
    }
  } else {
    const shift = 32 - 4 * (depth + 1);
    const base = prefix * RECON_FANOUT;
    const [s, e] = prefixRange(depth, prefix);
    const b = index.buckets[bucketOf(s)];
    if (b) {
      for (let i = b.lowerBound(s); i < b.n && b.keyHash(i) < e; i++) {
        const child = Math.floor(b.keyHash(i) / 2 ** shift) - base;
        sums[child].count++;
        sums[child].h.add(b.hhi(i), b.hlo(i));
      }
    }
  }
  return sums.map((s) => ({ count: s.count, hash: { hi: s.h.hi, lo: s.h.lo } }));
}
