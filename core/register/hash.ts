/**
 * Hashing for state comparison (docs/PROTOCOL.md §5).
 *
 * Murmur3_x86_32 (Appleby, public domain; tested against its published vectors) in a
 * streaming form, and a 64-bit multiset hash kept as two uint32 halves so that adding or
 * removing one entry is O(1) and needs no BigInt. This detects accidental divergence;
 * it is not a MAC: ETCP authenticates peers, and hostile-peer resistance (LtHash) is a
 * later protocol version.
 */

const C1 = 0xcc9e2d51;
const C2 = 0x1b873593;

function rotl(x: number, r: number): number {
  return (x << r) | (x >>> (32 - r));
}

export function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Streaming Murmur3_x86_32: feeding bytes in any split gives the one-shot digest. */
export class Murmur3 {
  private h = 0;
  private carry = 0;
  private carryLen = 0;
  private total = 0;

  reset(seed: number): this {
    this.h = seed | 0;
    this.carry = 0;
    this.carryLen = 0;
    this.total = 0;
    return this;
  }

  private block(k: number): void {
    k = Math.imul(k, C1);
    k = rotl(k, 15);
    k = Math.imul(k, C2);
    let h = this.h ^ k;
    h = rotl(h, 13);
    this.h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }

  update(b: Uint8Array, start = 0, end = b.length): this {
    this.total += end - start;
    let i = start;
    // Fill a partial block left from the previous update first.
    while (this.carryLen > 0 && i < end) {
      this.carry |= b[i++] << (8 * this.carryLen);
      if (++this.carryLen === 4) {
        this.block(this.carry);
        this.carry = 0;
        this.carryLen = 0;
      }
    }
    const blocksEnd = i + ((end - i) & ~3);
    for (; i < blocksEnd; i += 4) {
      this.block(b[i] | (b[i + 1] << 8) | (b[i + 2] << 16) | (b[i + 3] << 24));
    }
    for (; i < end; i++) {
      this.carry |= b[i] << (8 * this.carryLen);
      this.carryLen++;
    }
    return this;
  }

  /** Feeds a uint32 as 4 little-endian bytes. */
  updateU32(v: number): this {
    if (this.carryLen === 0) {
      this.total += 4;
      this.block(v | 0);
      return this;
    }
    const tmp = new Uint8Array(4);
    tmp[0] = v & 0xff;
    tmp[1] = (v >>> 8) & 0xff;
    tmp[2] = (v >>> 16) & 0xff;
    tmp[3] = (v >>> 24) & 0xff;
    return this.update(tmp);
  }

  /** The digest of everything fed so far; does not change the state (streams keep hashing). */
  digest(): number {
    let h = this.h;
    if (this.carryLen > 0) {
      let k = Math.imul(this.carry, C1);
      k = rotl(k, 15);
      k = Math.imul(k, C2);
      h ^= k;
    }
    h ^= this.total;
    return fmix32(h);
  }

  clone(): Murmur3 {
    const m = new Murmur3();
    m.h = this.h;
    m.carry = this.carry;
    m.carryLen = this.carryLen;
    m.total = this.total;
    return m;
  }
}

export function murmur3(seed: number, b: Uint8Array): number {
  return scratch.reset(seed).update(b).digest();
}

const scratch = new Murmur3();

/** fmix32 as an int32 (the same bits; `>>> 0` gives fmix32): hot paths keep hashes in int32s, which V8 never boxes. */
export function fmix32i(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  return h ^ (h >>> 16);
}

/** One-shot Murmur3_x86_32 of buf[off, off + len), without the streaming state, as an int32 (`>>> 0`: the digest). */
export function murmur3At(seed: number, buf: Uint8Array, off: number, len: number): number {
  let h = seed | 0;
  const end4 = off + (len & ~3);
  let i = off;
  for (; i < end4; i += 4) {
    let k = buf[i] | (buf[i + 1] << 8) | (buf[i + 2] << 16) | (buf[i + 3] << 24);
    k = Math.imul(k, C1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, C2);
    h ^= k;
    h = (h << 13) | (h >>> 19);
    h = (Math.imul(h, 5) + 0xe6546b64) | 0;
  }
  const r = len & 3;
  if (r > 0) {
    let k = buf[i];
    if (r > 1) k |= buf[i + 1] << 8;
    if (r > 2) k |= buf[i + 2] << 16;
    k = Math.imul(k, C1);
    k = (k << 15) | (k >>> 17);
    h ^= Math.imul(k, C2);
  }
  return fmix32i(h ^ len);
}

/** Where entryLanes leaves its result, as int32s (no allocation per entry). */
export const lanesOut = { hi: 0, lo: 0 };

/**
 * The end both entry hashes share (PROTOCOL.md §5): the body's r tail bytes (`tail`) then
 * u32le(version mod 2^32) ‖ u32le(version / 2^32), two whole words and r bytes left over,
 * then the length (4 + n + 8). Both lanes go to `lanesOut`. (The mixing is written out, not
 * called: these are the hottest lines of an apply, and V8's inlining budget runs out.)
 */
function finishLanes(h1: number, h2: number, tail: number, r: number, n: number, version: number): void {
  const vlo = version >>> 0;
  const vhi = Math.floor(version / 2 ** 32) >>> 0;
  let w1 = vlo;
  let w2 = vhi;
  let last = 0;
  if (r > 0) {
    const s = 8 * r;
    w1 = tail | (vlo << s);
    w2 = (vlo >>> (32 - s)) | (vhi << s);
    last = vhi >>> (32 - s);
  }
  let k: number;
  for (let j = 0; j < 2; j++) {
    k = Math.imul(j === 0 ? w1 : w2, C1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, C2);
    h1 ^= k;
    h1 = (h1 << 13) | (h1 >>> 19);
    h1 = (Math.imul(h1, 5) + 0xe6546b64) | 0;
    h2 ^= k;
    h2 = (h2 << 13) | (h2 >>> 19);
    h2 = (Math.imul(h2, 5) + 0xe6546b64) | 0;
  }
  if (r > 0) {
    k = Math.imul(last, C1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, C2);
    h1 ^= k;
    h2 ^= k;
  }
  const total = 4 + n + 8;
  lanesOut.hi = fmix32i(h1 ^ total);
  lanesOut.lo = fmix32i(h2 ^ total);
}

/**
 * Both lanes of a map entry's hash (PROTOCOL.md §5) in one pass: Murmur3 under `seedHi` and
 * `seedLo` of u32le(keyLen) ‖ key ‖ value ‖ u32le(version mod 2^32) ‖ u32le(version / 2^32),
 * the key and value being buf[off, off + klen + vlen). The key mixing is seed-independent,
 * so each word is mixed once for both lanes. Result in `lanesOut`.
 */
export function entryLanes(
  seedHi: number,
  seedLo: number,
  buf: Uint8Array,
  off: number,
  klen: number,
  vlen: number,
  version: number,
): void {
  let h1 = seedHi | 0;
  let h2 = seedLo | 0;
  let k = Math.imul(klen, C1);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, C2);
  h1 ^= k;
  h1 = (h1 << 13) | (h1 >>> 19);
  h1 = (Math.imul(h1, 5) + 0xe6546b64) | 0;
  h2 ^= k;
  h2 = (h2 << 13) | (h2 >>> 19);
  h2 = (Math.imul(h2, 5) + 0xe6546b64) | 0;
  const n = klen + vlen;
  const end4 = off + (n & ~3);
  let i = off;
  for (; i < end4; i += 4) {
    k = buf[i] | (buf[i + 1] << 8) | (buf[i + 2] << 16) | (buf[i + 3] << 24);
    k = Math.imul(k, C1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, C2);
    h1 ^= k;
    h1 = (h1 << 13) | (h1 >>> 19);
    h1 = (Math.imul(h1, 5) + 0xe6546b64) | 0;
    h2 ^= k;
    h2 = (h2 << 13) | (h2 >>> 19);
    h2 = (Math.imul(h2, 5) + 0xe6546b64) | 0;
  }
  const r = n & 3;
  let t = 0;
  if (r > 0) {
    t = buf[i];
    if (r > 1) t |= buf[i + 1] << 8;
    if (r > 2) t |= buf[i + 2] << 16;
  }
  finishLanes(h1, h2, t, r, n, version);
}

/** Whether this host stores an int32 little-endian: entryWords reads bytes as words only then. */
export const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1;

/**
 * The key hash (murmur3At under `keySeed` of the key) and both lanes of the entry hash
 * (entryLanes) in one pass: the key's words are loaded and mixed once for the three. The key
 * and value are w's words from q on (4-aligned, read as little-endian words: LITTLE_ENDIAN
 * hosts only), the key first, klen + vlen bytes padded to 4 (the pad bytes are ignored).
 * Returns the key hash as an int32; the lanes are left in lanesOut.
 */
export function entryWords(
  keySeed: number,
  seedHi: number,
  seedLo: number,
  w: Int32Array,
  q: number,
  klen: number,
  vlen: number,
  version: number,
): number {
  let hk = keySeed | 0;
  let h1 = seedHi | 0;
  let h2 = seedLo | 0;
  // The entry starts with u32le(klen): the key's words then sit at the same word boundaries in both hashes.
  let k = Math.imul(klen, C1);
  k = (k << 15) | (k >>> 17);
  k = Math.imul(k, C2);
  h1 ^= k;
  h1 = (h1 << 13) | (h1 >>> 19);
  h1 = (Math.imul(h1, 5) + 0xe6546b64) | 0;
  h2 ^= k;
  h2 = (h2 << 13) | (h2 >>> 19);
  h2 = (Math.imul(h2, 5) + 0xe6546b64) | 0;
  let i = q;
  const kend = q + (klen >>> 2);
  for (; i < kend; i++) {
    k = Math.imul(w[i], C1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, C2);
    hk ^= k;
    hk = (hk << 13) | (hk >>> 19);
    hk = (Math.imul(hk, 5) + 0xe6546b64) | 0;
    h1 ^= k;
    h1 = (h1 << 13) | (h1 >>> 19);
    h1 = (Math.imul(h1, 5) + 0xe6546b64) | 0;
    h2 ^= k;
    h2 = (h2 << 13) | (h2 >>> 19);
    h2 = (Math.imul(h2, 5) + 0xe6546b64) | 0;
  }
  const kr = klen & 3;
  if (kr > 0) {
    k = Math.imul(w[i] & ((1 << (8 * kr)) - 1), C1);
    k = (k << 15) | (k >>> 17);
    hk ^= Math.imul(k, C2);
  }
  const kh = fmix32i(hk ^ klen);
  // The lanes go on over the key's last bytes and the value, word by word from the same word.
  const n = klen + vlen;
  const end = q + (n >>> 2);
  for (; i < end; i++) {
    k = Math.imul(w[i], C1);
    k = (k << 15) | (k >>> 17);
    k = Math.imul(k, C2);
    h1 ^= k;
    h1 = (h1 << 13) | (h1 >>> 19);
    h1 = (Math.imul(h1, 5) + 0xe6546b64) | 0;
    h2 ^= k;
    h2 = (h2 << 13) | (h2 >>> 19);
    h2 = (Math.imul(h2, 5) + 0xe6546b64) | 0;
  }
  const r = n & 3;
  finishLanes(h1, h2, r > 0 ? w[i] & ((1 << (8 * r)) - 1) : 0, r, n, version);
  return kh;
}

/** Lane seeds: the two halves of a 64-bit hash are Murmur3 under two derived seeds. */
export function laneSeeds(seed: number): [number, number] {
  return [fmix32(seed ^ 0x5350_0001), fmix32(seed ^ 0x5350_0002)];
}

/** A 64-bit value as two uint32 halves. Mutable: multiset hashes update in place. */
export class Hash64 {
  constructor(
    public hi = 0,
    public lo = 0,
  ) {}

  add(hi: number, lo: number): void {
    const l = this.lo + lo;
    this.lo = l >>> 0;
    this.hi = (this.hi + hi + (l > 0xffffffff ? 1 : 0)) >>> 0;
  }

  sub(hi: number, lo: number): void {
    const l = this.lo - lo;
    this.lo = l >>> 0;
    this.hi = (this.hi - hi - (l < 0 ? 1 : 0)) >>> 0;
  }

  /** add() for halves given as int32 bits (hot paths pass int32s: V8 boxes a uint32 argument above 2^31). */
  addBits(hi: number, lo: number): void {
    const l = this.lo + (lo >>> 0);
    this.lo = l >>> 0;
    this.hi = (this.hi + (hi >>> 0) + (l > 0xffffffff ? 1 : 0)) >>> 0;
  }

  subBits(hi: number, lo: number): void {
    const l = this.lo - (lo >>> 0);
    this.lo = l >>> 0;
    this.hi = (this.hi - (hi >>> 0) - (l < 0 ? 1 : 0)) >>> 0;
  }

  equals(o: { hi: number; lo: number }): boolean {
    return this.hi === o.hi && this.lo === o.lo;
  }

  set(o: { hi: number; lo: number }): void {
    this.hi = o.hi;
    this.lo = o.lo;
  }

  copy(): Hash64 {
    return new Hash64(this.hi, this.lo);
  }

  toString(): string {
    return hashHex(this);
  }
}

/** The char codes of the hex digits. */
const HEX = new Uint8Array([48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 97, 98, 99, 100, 101, 102]);

/**
 * 16 lower-case hex digits. Every collapse event carries one (and events may queue by the
 * thousand): one flat string from its char codes, where concatenating pairs built a rope of
 * seven strings and cost twice the time.
 */
export function hashHex(h: { hi: number; lo: number }): string {
  const x = h.hi;
  const y = h.lo;
  return String.fromCharCode(
    HEX[x >>> 28],
    HEX[(x >>> 24) & 15],
    HEX[(x >>> 20) & 15],
    HEX[(x >>> 16) & 15],
    HEX[(x >>> 12) & 15],
    HEX[(x >>> 8) & 15],
    HEX[(x >>> 4) & 15],
    HEX[x & 15],
    HEX[y >>> 28],
    HEX[(y >>> 24) & 15],
    HEX[(y >>> 20) & 15],
    HEX[(y >>> 16) & 15],
    HEX[(y >>> 12) & 15],
    HEX[(y >>> 8) & 15],
    HEX[(y >>> 4) & 15],
    HEX[y & 15],
  );
}

export function hashEquals(a: { hi: number; lo: number }, b: { hi: number; lo: number }): boolean {
  return a.hi === b.hi && a.lo === b.lo;
}
