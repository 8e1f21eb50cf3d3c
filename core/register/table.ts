/**
 * A map register's live entries: one open-addressing table ordered by key hash (linear
 * probing whose home slot is the hash's top bits, each run kept sorted, as in Amble and
 * Knuth's ordered hash tables), its slots in one Int32Array and the entries in one byte arena.
 * A lookup is one slot load and one arena load (two cache misses at most, no allocation); an
 * insert shifts the few slots of its run. The slots are in key-hash
 * order, so a reconciliation bucket (keyspace.ts) is a run of slots, and its count and multiset
 * hash are kept per write; a pin copies a bucket out of the table (lazily, before the first write
 * to it after the pin, or when the pin first reads it), so pins stay O(buckets) to take.
 *
 * A slot is 16 bytes: biased key hash, arena offset (uint32 bits), key length, value length; an
 * empty slot's key length is -1. The rest of an entry sits in the arena beside its key: a 16-byte
 * header (entry hash hi/lo, version lo/hi), the key, the value, padded to 4 bytes. So a write
 * touches one table line and the arena line of its key, and the table is half the size it would
 * be with whole records (2 MiB for the bench's 86,000 keys).
 */
import { BUCKETS, Bucket, HHI, HLO, KLEN, OFF, STRIDE, VLEN, type EntryVisitor } from './keyspace.js';
import { copyBytes } from '../../wire/buffer.js';

/** Int32 words per slot, and the fields of a slot. */
const HS = 4;
const S_OFF = 1;
const S_KLEN = 2;
const S_VLEN = 3;
/** Bytes of an entry's header in the arena: entry hash hi, lo, version lo, hi (int32 words). */
export const HEAD = 16;
const TWO32 = 2 ** 32;
/** The table doubles past 3/4 full: runs stay short (the sorted runs end a miss early as well). */
const MAX_LOAD = 0.75;
/** The largest arena: offsets are uint32 and entries 4-aligned (a typed array holds at most 2^32 bytes). */
const MAX_ARENA = 2 ** 32 - 4;

/** Arena bytes of an entry: header, key and value, padded to 4. */
export const entrySize = (klen: number, vlen: number): number => HEAD + ((klen + vlen + 3) & ~3);

export class KeyTable {
  /** Slots, HS int32 words each: `cap` home slots and a tail the last runs spill into. */
  rec: Int32Array;
  arena = new Uint8Array(256);
  /** The arena as int32 words (entry headers). */
  a32 = new Int32Array(this.arena.buffer);
  /** Arena bytes in use, of which `garbage` belong to overwritten or removed entries. */
  used = 0;
  garbage = 0;
  count = 0;
  /** Per reconciliation bucket: entries, and their multiset hash halves (uint32 bits in int32s). */
  readonly bCount = new Int32Array(BUCKETS);
  readonly bHi = new Int32Array(BUCKETS);
  readonly bLo = new Int32Array(BUCKETS);
  private cap: number;
  private shift: number;
  private slots: number;
  /** Pin generation; a bucket's stamp is the generation of its last write (a write in a newer one copies it out first). */
  private gen = 0;
  private readonly stamp = new Int32Array(BUCKETS);
  /** Pins that may still hold buckets not copied out (held weakly: a pin nobody reads needs no copy). */
  private pins: WeakRef<(Bucket | undefined)[]>[] = [];
  /** pins' length at which pin() drops the dead ones (a register pinned while nobody writes it would keep every WeakRef). */
  private sweepAt = 64;

  constructor(cap = 16) {
    this.cap = cap;
    this.shift = 32 - Math.log2(cap);
    this.slots = cap + tail(cap);
    this.rec = new Int32Array(this.slots * HS).fill(-1);
  }

  /** The home slot of a biased key hash: its top bits. */
  private home(bh: number): number {
    return (bh ^ 0x80000000) >>> this.shift;
  }

  /** The slot of a key (biased key hash `bh`, bytes buf[off, off + len)), or -(insertion slot) - 1 if absent. */
  find(bh: number, buf: Uint8Array, off: number, len: number): number {
    const m = this.rec;
    const a = this.arena;
    const slots = this.slots;
    let i = this.home(bh);
    for (let w = i * HS; i < slots; i++, w += HS) {
      const kl = m[w + S_KLEN];
      if (kl < 0) break;
      const h = m[w];
      if (h < bh) continue;
      if (h > bh) break;
      if (kl !== len) continue;
      const at = (m[w + S_OFF] >>> 0) + HEAD;
      let j = 0;
      while (j < len && a[at + j] === buf[off + j]) j++;
      if (j === len) return i;
    }
    return -i - 1;
  }

  /**
   * find() for a key staged in the arena itself (its bytes at word q of a32, 4-aligned, as every
   * entry's key is): the keys are compared a word at a time.
   */
  findStaged(bh: number, q: number, len: number): number {
    const m = this.rec;
    const h = this.a32;
    const slots = this.slots;
    const words = len >>> 2;
    const mask = (1 << (8 * (len & 3))) - 1; // the last word's key bytes (0: none)
    let i = this.home(bh);
    for (let w = i * HS; i < slots; i++, w += HS) {
      const kl = m[w + S_KLEN];
      if (kl < 0) break;
      const hh = m[w];
      if (hh < bh) continue;
      if (hh > bh) break;
      if (kl !== len) continue;
      const p = ((m[w + S_OFF] >>> 0) + HEAD) >>> 2;
      let j = 0;
      while (j < words && h[p + j] === h[q + j]) j++;
      if (j === words && (mask === 0 || ((h[p + j] ^ h[q + j]) & mask) === 0)) return i;
    }
    return -i - 1;
  }

  /** Arena offset of slot i's entry (its header; the key follows at + HEAD). */
  entryAt(i: number): number {
    return this.rec[i * HS + S_OFF] >>> 0;
  }

  keyLen(i: number): number {
    return this.rec[i * HS + S_KLEN];
  }

  valueLen(i: number): number {
    return this.rec[i * HS + S_VLEN];
  }

  hhi(i: number): number {
    return this.a32[this.entryAt(i) >>> 2];
  }

  hlo(i: number): number {
    return this.a32[(this.entryAt(i) >>> 2) + 1];
  }

  version(i: number): number {
    const q = this.entryAt(i) >>> 2;
    const hi = this.a32[q + 3];
    // No float arithmetic below 2^32: in unoptimised code it yields a heap number, not a small
    // integer, and a heap-number version deoptimises every caller compiled for small integers.
    return hi === 0 ? this.a32[q + 2] >>> 0 : (this.a32[q + 2] >>> 0) + hi * TWO32;
  }

  /** Biased key hash of slot i. */
  biasedHash(i: number): number {
    return this.rec[i * HS];
  }

  /** Before a write to bucket `b`: copy it out to every pin that has not got it yet. */
  touch(b: number): void {
    if (this.stamp[b] === this.gen) return;
    this.stamp[b] = this.gen;
    let first: Bucket | undefined;
    let live = 0;
    for (const ref of this.pins) {
      const pin = ref.deref();
      if (pin === undefined) continue;
      this.pins[live++] = ref;
      const pb = pin[b];
      if (pb === undefined || !pb.pending) continue;
      const own = pb.onTouch;
      if (own !== undefined) {
        pb.onTouch = undefined;
        own(); // reads the bucket in place, before the write: no copy
        continue;
      }
      if (first === undefined) {
        pb.load();
        first = pb;
      } else pb.adopt(first);
    }
    this.pins.length = live;
  }

  /**
   * Room for `n` entries in all without growing. A bulk load (a snapshot, a full transfer) comes
   * in key-hash order, and into a table sized for the keys so far every key's home lies in the
   * part the earlier keys fill: one run holds them all and each insert scans it (10^6 keys: ~70 s).
   * Sized for all of them first, the homes spread over the whole table and runs stay short.
   */
  reserveCount(n: number): void {
    let cap = this.cap;
    while (n > cap * MAX_LOAD) cap *= 2;
    if (cap > this.cap) this.rehash(cap);
  }

  /** Grow to keep the load under MAX_LOAD before one more entry; slots move (find again after). */
  reserveEntry(): void {
    if (this.count + 1 > this.cap * MAX_LOAD) this.rehash(this.cap * 2);
  }

  /** Open slot `p` (an insertion slot from find) for a new entry: the run from p shifts up by one. */
  openAt(p: number): void {
    let q = p;
    while (q < this.slots && this.rec[q * HS + S_KLEN] >= 0) q++;
    if (q === this.slots) this.growTail(q + 1);
    const m = this.rec;
    if (q - p <= 8) for (let w = q * HS - 1; w >= p * HS; w--) m[w + HS] = m[w];
    else m.copyWithin((p + 1) * HS, p * HS, q * HS);
    this.count++;
  }

  /** Remove slot `p`: the entries after it that sit past their home move down one (backward shift). */
  removeAt(p: number): void {
    const m = this.rec;
    const w0 = p * HS;
    this.garbage += entrySize(m[w0 + S_KLEN], m[w0 + S_VLEN]);
    let j = p + 1;
    while (j < this.slots && m[j * HS + S_KLEN] >= 0 && this.home(m[j * HS]) < j) j++;
    if (j > p + 1) m.copyWithin(w0, w0 + HS, j * HS);
    m.fill(-1, (j - 1) * HS, j * HS);
    this.count--;
    if (this.count === 0) {
      this.used = 0;
      this.garbage = 0;
    }
  }

  /** Set slot i to the entry at arena offset `at` and write that entry's header. */
  setAt(i: number, bh: number, at: number, klen: number, vlen: number, hhi: number, hlo: number, version: number): void {
    const w = i * HS;
    const m = this.rec;
    m[w] = bh;
    m[w + S_OFF] = at;
    m[w + S_KLEN] = klen;
    m[w + S_VLEN] = vlen;
    const q = at >>> 2;
    const h = this.a32;
    h[q] = hhi;
    h[q + 1] = hlo;
    h[q + 2] = version | 0;
    h[q + 3] = (version / TWO32) | 0;
  }

  /** Room for an entry of `size` arena bytes (entrySize) at the end; compacts or grows the arena (offsets move). Returns its offset. */
  reserve(size: number): number {
    if (this.used + size > this.arena.length) this.makeRoom(size);
    const off = this.used;
    this.used += size;
    return off;
  }

  /**
   * arena[to, to + len) = the bytes of `v` from `from` (`v` over `src`: little-endian hosts only):
   * a word at a time where `to` is 4-aligned, as the copy a short key or value is ([len > 64]: one native copy).
   */
  copyIn(to: number, src: Uint8Array, v: DataView, from: number, len: number): void {
    if (len > 64) {
      this.arena.set(src.subarray(from, from + len), to);
      return;
    }
    let j = 0;
    if ((to & 3) === 0) {
      const h = this.a32;
      const q = to >>> 2;
      const words = len >>> 2;
      for (let w = 0; w < words; w++) h[q + w] = v.getInt32(from + 4 * w, true);
      j = words << 2;
    }
    const a = this.arena;
    for (; j < len; j++) a[to + j] = src[from + j];
  }

  /** Give back the last `size` bytes reserve() handed out (nothing reserved since). */
  unreserve(size: number): void {
    this.used -= size;
  }

  /** Copy the `words` int32 words at arena offset `from` to offset `to` (both 4-aligned). */
  copyWords(to: number, from: number, words: number): void {
    const h = this.a32;
    const d = to >>> 2;
    const s = from >>> 2;
    for (let j = 0; j < words; j++) h[d + j] = h[s + j];
  }

  private makeRoom(len: number): void {
    const live = this.used - this.garbage;
    const size = this.arena.length;
    // Repack when a quarter is garbage and the bytes fit; else double (the sizes reached are powers of two).
    let cap = size;
    if (this.garbage < size >>> 2 || live + len > size) {
      cap = size * 2;
      while (cap < live + len) cap *= 2;
    }
    if (cap > MAX_ARENA) {
      cap = MAX_ARENA;
      if (live + len > cap) throw new RangeError(`map register: ${live + len} octets of keys and values exceed ${MAX_ARENA}`);
    }
    const src = this.arena;
    const dst = new Uint8Array(cap);
    if (this.garbage === 0) dst.set(src.subarray(0, this.used));
    else {
      const m = this.rec;
      let at = 0;
      for (let w = 0; w < m.length; w += HS) {
        if (m[w + S_KLEN] < 0) continue;
        const n = entrySize(m[w + S_KLEN], m[w + S_VLEN]);
        copyBytes(dst, at, src, m[w + S_OFF] >>> 0, n);
        m[w + S_OFF] = at;
        at += n;
      }
      this.used = at;
      this.garbage = 0;
    }
    this.arena = dst;
    this.a32 = new Int32Array(dst.buffer);
  }

  /** Add an entry hash to its bucket's sum. */
  bucketAdd(b: number, hhi: number, hlo: number): void {
    const l = (this.bLo[b] >>> 0) + (hlo >>> 0);
    this.bLo[b] = l | 0;
    this.bHi[b] = ((this.bHi[b] >>> 0) + (hhi >>> 0) + (l >= TWO32 ? 1 : 0)) | 0;
    this.bCount[b]++;
  }

  /** Take an entry hash out of its bucket's sum. */
  bucketSub(b: number, hhi: number, hlo: number): void {
    const l = (this.bLo[b] >>> 0) - (hlo >>> 0);
    this.bLo[b] = l | 0;
    this.bHi[b] = ((this.bHi[b] >>> 0) - (hhi >>> 0) - (l < 0 ? 1 : 0)) | 0;
    this.bCount[b]--;
  }

  /** The first slot of bucket `b`'s entries (or where they would start). */
  private bucketStart(b: number): number {
    const bh = ((b << 20) ^ 0x80000000) | 0;
    const m = this.rec;
    let i = this.home(bh);
    while (i < this.slots && m[i * HS + S_KLEN] >= 0 && m[i * HS] < bh) i++;
    return i;
  }

  /** Visit bucket `b`'s entries in key-hash order, in place; returns how many. */
  visitBucket(b: number, visit: EntryVisitor): number {
    const n = this.bCount[b];
    const m = this.rec;
    const h = this.a32;
    let k = 0;
    for (let i = this.bucketStart(b); k < n; i++) {
      const w = i * HS;
      if (m[w + S_KLEN] < 0) continue;
      const off = m[w + S_OFF] >>> 0;
      const q = off >>> 2;
      const hi = h[q + 3];
      visit(this.arena, off + HEAD, m[w + S_KLEN], m[w + S_VLEN], hi === 0 ? h[q + 2] >>> 0 : (h[q + 2] >>> 0) + hi * TWO32);
      k++;
    }
    return n;
  }

  /** Copy bucket `b` out as a pin's Bucket: its records in key-hash order, their bytes packed into a new arena. */
  copyBucket(b: number): { n: number; meta: Int32Array; arena: Uint8Array } {
    const n = this.bCount[b];
    const meta = new Int32Array(n * STRIDE);
    const m = this.rec;
    const h = this.a32;
    let bytes = 0;
    let k = 0;
    for (let i = this.bucketStart(b); k < n; i++) {
      const w = i * HS;
      if (m[w + S_KLEN] < 0) continue;
      const d = k * STRIDE;
      const q = (m[w + S_OFF] >>> 0) >>> 2;
      meta[d] = m[w];
      meta[d + HHI] = h[q];
      meta[d + HLO] = h[q + 1];
      meta[d + OFF] = m[w + S_OFF]; // the table's offset until the bytes are packed below
      meta[d + KLEN] = m[w + S_KLEN];
      meta[d + VLEN] = m[w + S_VLEN];
      meta[d + 6] = h[q + 2];
      meta[d + 7] = h[q + 3];
      bytes += m[w + S_KLEN] + m[w + S_VLEN];
      k++;
    }
    const arena = new Uint8Array(bytes);
    let at = 0;
    for (let w = 0; w < meta.length; w += STRIDE) {
      const len = meta[w + KLEN] + meta[w + VLEN];
      copyBytes(arena, at, this.arena, (meta[w + OFF] >>> 0) + HEAD, len);
      meta[w + OFF] = at;
      at += len;
    }
    return { n, meta, arena };
  }

  /**
   * A pin's buckets at this moment: O(buckets), each non-empty one copied out of the table only
   * when the pin reads it or the table is about to write it.
   */
  pin(): (Bucket | undefined)[] {
    const out = new Array<Bucket | undefined>(BUCKETS);
    for (let b = 0; b < BUCKETS; b++)
      out[b] = this.bCount[b] > 0 ? Bucket.pending(this, b, this.bCount[b], this.bHi[b] >>> 0, this.bLo[b] >>> 0, out) : undefined;
    this.gen++;
    if (this.pins.length >= this.sweepAt) {
      this.pins = this.pins.filter((r) => r.deref() !== undefined);
      this.sweepAt = Math.max(64, 2 * this.pins.length);
    }
    // Held weakly: a pending bucket keeps its array alive, so a pin still read is always copied out before a write.
    this.pins.push(new WeakRef(out));
    return out;
  }

  /** Every occupied slot in key-hash order. */
  *occupiedSlots(): IterableIterator<number> {
    for (let i = 0; i < this.slots; i++) if (this.rec[i * HS + S_KLEN] >= 0) yield i;
  }

  /** A table of `cap` home slots with the same entries (in order: each at its home or just past the one before). */
  private rehash(cap: number): void {
    const old = this.rec;
    this.cap = cap;
    this.shift = 32 - Math.log2(cap);
    this.slots = cap + tail(cap);
    this.rec = new Int32Array(this.slots * HS).fill(-1);
    let last = -1;
    for (let w = 0; w < old.length; w += HS) {
      if (old[w + S_KLEN] < 0) continue;
      const p = Math.max(this.home(old[w]), last + 1);
      if (p >= this.slots) this.growTail(p + 1);
      const rec = this.rec;
      const d = p * HS;
      rec[d] = old[w];
      rec[d + 1] = old[w + 1];
      rec[d + 2] = old[w + 2];
      rec[d + 3] = old[w + 3];
      last = p;
    }
  }

  /** At least `slots` slots: a run reached the end of the tail (skewed hashes); home slots unchanged. */
  private growTail(slots: number): void {
    const n = Math.max(slots, this.slots + tail(this.slots));
    const rec = new Int32Array(n * HS).fill(-1);
    rec.set(this.rec);
    this.rec = rec;
    this.slots = n;
  }
}

/** Slots past the last home slot for the runs that spill over the end. */
function tail(cap: number): number {
  return Math.max(16, cap >>> 6);
}
