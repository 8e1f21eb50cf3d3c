/**
 * A map register's live entries: one open-addressing table ordered by key hash (linear
 * probing whose home slot is the hash's top bits, each run kept sorted, as in Amble and
 * Knuth's ordered hash tables), its records inline in one Int32Array and the keys and values
 * in one byte arena. A lookup is one record load and one arena load (two cache misses at most,
 * none for an allocation); an insert shifts the few records of its run. The slots are in key-hash
 * order, so a reconciliation bucket (keyspace.ts) is a run of slots, and its count and multiset
 * hash are kept per write; a pin copies a bucket out of the table (lazily, before the first write
 * to it after the pin, or when the pin first reads it), so pins stay O(buckets) to take.
 *
 * Records have Bucket.meta's layout (keyspace.ts): biased key hash, entry hash hi/lo, arena
 * offset (uint32 bits), key length, value length, version lo/hi. An empty slot's key length is -1.
 */
import { BUCKETS, Bucket, HHI, HLO, KLEN, OFF, STRIDE, VLEN, copyBytes } from './keyspace.js';

const VLO = 6;
const VHI = 7;
const TWO32 = 2 ** 32;
/** The table doubles past 3/4 full: runs stay short (the sorted runs end a miss early as well). */
const MAX_LOAD = 0.75;
/** The largest arena: offsets are uint32, and a typed array holds at most 2^32 bytes. */
const MAX_ARENA = 2 ** 32 - 1;

export class KeyTable {
  /** Records, STRIDE int32 words per slot: `cap` home slots and a tail the last runs spill into. */
  rec: Int32Array;
  arena = new Uint8Array(256);
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

  constructor(cap = 16) {
    this.cap = cap;
    this.shift = 32 - Math.log2(cap);
    this.slots = cap + tail(cap);
    this.rec = new Int32Array(this.slots * STRIDE).fill(-1);
  }

  /** The home slot of a biased key hash: its top bits. */
  private home(bh: number): number {
    return (bh ^ 0x80000000) >>> this.shift;
  }

  occupied(i: number): boolean {
    return this.rec[i * STRIDE + KLEN] >= 0;
  }

  /** The slot of a key (biased key hash `bh`, bytes buf[off, off + len)), or -(insertion slot) - 1 if absent. */
  find(bh: number, buf: Uint8Array, off: number, len: number): number {
    const m = this.rec;
    const a = this.arena;
    const slots = this.slots;
    let i = this.home(bh);
    for (let w = i * STRIDE; i < slots; i++, w += STRIDE) {
      const kl = m[w + KLEN];
      if (kl < 0) break;
      const h = m[w];
      if (h < bh) continue;
      if (h > bh) break;
      if (kl !== len) continue;
      const at = m[w + OFF] >>> 0;
      let j = 0;
      while (j < len && a[at + j] === buf[off + j]) j++;
      if (j === len) return i;
    }
    return -i - 1;
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
      if (first === undefined) {
        pb.load();
        first = pb;
      } else pb.adopt(first);
    }
    this.pins.length = live;
  }

  /** Grow to keep the load under MAX_LOAD before one more entry; slots move (find again after). */
  reserveEntry(): void {
    if (this.count + 1 > this.cap * MAX_LOAD) this.rehash(this.cap * 2);
  }

  /** Open slot `p` (an insertion slot from find) for a new entry: the run from p shifts up by one. */
  openAt(p: number): void {
    let q = p;
    while (q < this.slots && this.rec[q * STRIDE + KLEN] >= 0) q++;
    if (q === this.slots) this.growTail(q + 1);
    const m = this.rec;
    if (q - p <= 4) for (let w = q * STRIDE - 1; w >= p * STRIDE; w--) m[w + STRIDE] = m[w];
    else m.copyWithin((p + 1) * STRIDE, p * STRIDE, q * STRIDE);
    this.count++;
  }

  /** Remove slot `p`: the entries after it that sit past their home move down one (backward shift). */
  removeAt(p: number): void {
    const m = this.rec;
    const w0 = p * STRIDE;
    this.garbage += m[w0 + KLEN] + m[w0 + VLEN];
    let j = p + 1;
    while (j < this.slots && m[j * STRIDE + KLEN] >= 0 && this.home(m[j * STRIDE]) < j) j++;
    if (j > p + 1) m.copyWithin(w0, w0 + STRIDE, j * STRIDE);
    m.fill(-1, (j - 1) * STRIDE, j * STRIDE);
    this.count--;
    if (this.count === 0) {
      this.used = 0;
      this.garbage = 0;
    }
  }

  setAt(i: number, bh: number, hhi: number, hlo: number, off: number, klen: number, vlen: number, version: number): void {
    const w = i * STRIDE;
    const m = this.rec;
    m[w] = bh;
    m[w + HHI] = hhi;
    m[w + HLO] = hlo;
    m[w + OFF] = off;
    m[w + KLEN] = klen;
    m[w + VLEN] = vlen;
    m[w + VLO] = version | 0;
    m[w + VHI] = (version / TWO32) | 0;
  }

  version(i: number): number {
    const w = i * STRIDE;
    return (this.rec[w + VLO] >>> 0) + this.rec[w + VHI] * TWO32;
  }

  /** Room for `len` arena bytes at the end; compacts or grows the arena (offsets move). Returns the offset. */
  reserve(len: number): number {
    if (this.used + len > this.arena.length) this.makeRoom(len);
    const off = this.used;
    this.used += len;
    return off;
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
      for (let w = 0; w < m.length; w += STRIDE) {
        if (m[w + KLEN] < 0) continue;
        const n = m[w + KLEN] + m[w + VLEN];
        copyBytes(dst, at, src, m[w + OFF] >>> 0, n);
        m[w + OFF] = at;
        at += n;
      }
      this.used = at;
      this.garbage = 0;
    }
    this.arena = dst;
  }

  /** Add (or with `sign` -1 take out) an entry hash to its bucket's sum. */
  bucketAdd(b: number, hhi: number, hlo: number): void {
    const l = (this.bLo[b] >>> 0) + (hlo >>> 0);
    this.bLo[b] = l | 0;
    this.bHi[b] = ((this.bHi[b] >>> 0) + (hhi >>> 0) + (l >= TWO32 ? 1 : 0)) | 0;
    this.bCount[b]++;
  }

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
    while (i < this.slots && m[i * STRIDE + KLEN] >= 0 && m[i * STRIDE] < bh) i++;
    return i;
  }

  /** Copy bucket `b` out: its records in key-hash order, their bytes packed into a new arena. */
  copyBucket(b: number): { n: number; meta: Int32Array; arena: Uint8Array } {
    const n = this.bCount[b];
    const meta = new Int32Array(n * STRIDE);
    const m = this.rec;
    let bytes = 0;
    let k = 0;
    for (let i = this.bucketStart(b); k < n; i++) {
      const w = i * STRIDE;
      if (m[w + KLEN] < 0) continue;
      for (let j = 0; j < STRIDE; j++) meta[k * STRIDE + j] = m[w + j];
      bytes += m[w + KLEN] + m[w + VLEN];
      k++;
    }
    const arena = new Uint8Array(bytes);
    let at = 0;
    for (let w = 0; w < meta.length; w += STRIDE) {
      const len = meta[w + KLEN] + meta[w + VLEN];
      copyBytes(arena, at, this.arena, meta[w + OFF] >>> 0, len);
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
    // Held weakly: a pending bucket keeps its array alive, so a pin still read is always copied out before a write.
    this.pins.push(new WeakRef(out));
    return out;
  }

  /** Every occupied slot in key-hash order. */
  *occupiedSlots(): IterableIterator<number> {
    for (let i = 0; i < this.slots; i++) if (this.rec[i * STRIDE + KLEN] >= 0) yield i;
  }

  /** A table of `cap` home slots with the same entries (in order: each at its home or just past the one before). */
  private rehash(cap: number): void {
    const old = this.rec;
    this.cap = cap;
    this.shift = 32 - Math.log2(cap);
    this.slots = cap + tail(cap);
    this.rec = new Int32Array(this.slots * STRIDE).fill(-1);
    let last = -1;
    for (let w = 0; w < old.length; w += STRIDE) {
      if (old[w + KLEN] < 0) continue;
      const p = Math.max(this.home(old[w]), last + 1);
      if (p >= this.slots) this.growTail(p + 1);
      const rec = this.rec;
      for (let k = 0, d = p * STRIDE; k < STRIDE; k++) rec[d + k] = old[w + k];
      last = p;
    }
  }

  /** At least `slots` slots: a run reached the end of the tail (skewed hashes); home slots unchanged. */
  private growTail(slots: number): void {
    const n = Math.max(slots, this.slots + tail(this.slots));
    const rec = new Int32Array(n * STRIDE).fill(-1);
    rec.set(this.rec);
    this.rec = rec;
    this.slots = n;
  }
}

/** Slots past the last home slot for the runs that spill over the end. */
function tail(cap: number): number {
  return Math.max(16, cap >>> 6);
}
