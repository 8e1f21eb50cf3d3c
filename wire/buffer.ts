/**
 * Bounds-checked cursor reader and growable writer. Every read names the field it
 * reads, so a malformed frame produces an error that says where it broke.
 */
import { DropReason } from './constants.js';
import { WireError } from './errors.js';

/** LEB128 varints: at most 8 bytes and at most 2^53-1, so every decoded value is an exact JS number. */
const MAX_VARINT_BYTES = 8;

export class Reader {
  pos: number;
  constructor(
    readonly buf: Uint8Array,
    start = 0,
    readonly end = buf.length,
  ) {
    this.pos = start;
  }

  get remaining(): number {
    return this.end - this.pos;
  }

  private need(n: number, field: string): void {
    if (this.end - this.pos < n) {
      throw new WireError(DropReason.MalformedPayload, field, `needs ${n} bytes, ${this.end - this.pos} left`);
    }
  }

  u8(field: string): number {
    this.need(1, field);
    return this.buf[this.pos++];
  }

  u16(field: string): number {
    this.need(2, field);
    const v = (this.buf[this.pos] << 8) | this.buf[this.pos + 1];
    this.pos += 2;
    return v;
  }

  u32(field: string): number {
    this.need(4, field);
    const b = this.buf;
    const p = this.pos;
    this.pos += 4;
    return ((b[p] << 24) | (b[p + 1] << 16) | (b[p + 2] << 8) | b[p + 3]) >>> 0;
  }

  varint(field: string): number {
    let result = 0;
    let mul = 1;
    for (let i = 0; i < MAX_VARINT_BYTES; i++) {
      this.need(1, field);
      const byte = this.buf[this.pos++];
      result += (byte & 0x7f) * mul;
      if ((byte & 0x80) === 0) {
        if (i > 0 && byte === 0) {
          throw new WireError(DropReason.MalformedPayload, field, 'non-minimal varint');
        }
        if (result > Number.MAX_SAFE_INTEGER) {
          throw new WireError(DropReason.MalformedPayload, field, 'varint exceeds 2^53-1');
        }
        return result;
      }
      mul *= 128;
    }
    throw new WireError(DropReason.MalformedPayload, field, `varint longer than ${MAX_VARINT_BYTES} bytes`);
  }

  /**
   * varint(`${pre}[${i}]${post}`) without building the field name unless the read fails: the
   * name of a field of list entry i. A minimal varint of up to 4 bytes is read in place;
   * anything else is read again by varint() with its name (the same value, or the same fault).
   */
  varintAt(pre: string, i: number, post: string): number {
    const buf = this.buf;
    const end = this.end;
    let p = this.pos;
    let result = 0;
    let mul = 1;
    for (let k = 0; k < 4 && p < end; k++) {
      const byte = buf[p++];
      result += (byte & 0x7f) * mul;
      if ((byte & 0x80) === 0) {
        if (k > 0 && byte === 0) break; // non-minimal: varint() names it
        this.pos = p;
        return result;
      }
      mul *= 128;
    }
    return this.varint(`${pre}[${i}]${post}`);
  }

  /** u8 of list entry i's field, named only if the read fails (see varintAt). */
  u8At(pre: string, i: number, post: string): number {
    if (this.pos < this.end) return this.buf[this.pos++];
    return this.u8(`${pre}[${i}]${post}`);
  }

  /** A view (no copy) of the next n bytes. */
  bytes(n: number, field: string): Uint8Array {
    this.need(n, field);
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return v;
  }

  /** varint length then that many bytes, refusing lengths over `max`. */
  lenBytes(field: string, max: number): Uint8Array {
    const n = this.varint(`${field}.length`);
    if (n > max) {
      throw new WireError(DropReason.MalformedPayload, field, `length ${n} exceeds limit ${max}`);
    }
    return this.bytes(n, field);
  }

  hash64(field: string): Hash64Parts {
    const hi = this.u32(`${field}.hi`);
    const lo = this.u32(`${field}.lo`);
    return { hi, lo };
  }

  expectEnd(field: string): void {
    if (this.pos !== this.end) {
      throw new WireError(DropReason.MalformedPayload, field, `${this.end - this.pos} trailing bytes`);
    }
  }
}

export interface Hash64Parts {
  hi: number;
  lo: number;
}

const EMPTY = new Uint8Array(0);

/** dst[at, at + len) = src[off, off + len): a loop for the short copies keys and values are (set() costs a call and a view). */
export function copyBytes(dst: Uint8Array, at: number, src: Uint8Array, off: number, len: number): void {
  if (len > 64) dst.set(src.subarray(off, off + len), at);
  else for (let i = 0; i < len; i++) dst[at + i] = src[off + i];
}

/**
 * A buffer holding `old`'s first `used` octets with room for `need` (used ≤ need ≤ max): `old`
 * itself when it has the room, else a new one of max(first, need, twice old's size) octets, at
 * most `max`. Growing by doubling costs amortised O(1) per octet and holds at most twice what
 * it is asked for past `first`: what every gathering buffer that a peer's small pieces fill
 * needs (a stream's tail, a wrapped connection's writes, a chunk in progress, a Writer).
 */
export function roomFor(old: Uint8Array | undefined, used: number, need: number, first: number, max = Infinity): Uint8Array {
  if (old !== undefined && need <= old.length) return old;
  const grown = new Uint8Array(Math.min(max, Math.max(first, need, old === undefined ? 0 : 2 * old.length)));
  if (old !== undefined && used > 0) grown.set(old.subarray(0, used));
  return grown;
}

export class Writer {
  /** Allocated on the first write: a writer that ends up empty (a poll with nothing to send) costs no backing store. */
  buf: Uint8Array = EMPTY;
  pos = 0;
  constructor(private readonly initial = 256) {}

  private ensure(n: number): void {
    if (this.pos + n > this.buf.length) this.buf = roomFor(this.buf, this.pos, this.pos + n, Math.max(this.initial, 16));
  }

  u8(v: number): this {
    this.ensure(1);
    this.buf[this.pos++] = v & 0xff;
    return this;
  }

  u16(v: number): this {
    this.ensure(2);
    this.buf[this.pos++] = (v >>> 8) & 0xff;
    this.buf[this.pos++] = v & 0xff;
    return this;
  }

  u32(v: number): this {
    this.ensure(4);
    this.buf[this.pos++] = (v >>> 24) & 0xff;
    this.buf[this.pos++] = (v >>> 16) & 0xff;
    this.buf[this.pos++] = (v >>> 8) & 0xff;
    this.buf[this.pos++] = v & 0xff;
    return this;
  }

  varint(v: number): this {
    if (!Number.isSafeInteger(v) || v < 0) {
      throw new RangeError(`varint out of range: ${v}`);
    }
    this.ensure(MAX_VARINT_BYTES);
    while (v >= 0x80) {
      this.buf[this.pos++] = (v % 128) | 0x80;
      v = Math.floor(v / 128);
    }
    this.buf[this.pos++] = v;
    return this;
  }

  bytes(b: Uint8Array): this {
    this.ensure(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
    return this;
  }

  /** src[off, off + len) without a view (short keys and values are copied byte by byte). */
  bytesAt(src: Uint8Array, off: number, len: number): this {
    this.ensure(len);
    copyBytes(this.buf, this.pos, src, off, len);
    this.pos += len;
    return this;
  }

  lenBytes(b: Uint8Array): this {
    return this.varint(b.length).bytes(b);
  }

  hash64(h: Hash64Parts): this {
    return this.u32(h.hi).u32(h.lo);
  }

  finish(): Uint8Array {
    return this.buf.slice(0, this.pos);
  }

  /** Start over, keeping the buffer (a scratch writer reused by one encoder). */
  reset(): this {
    this.pos = 0;
    return this;
  }
}

/** Encoded size of a varint, for packing decisions without encoding. */
export function varintLen(v: number): number {
  if (v < 0x80) return 1;
  if (v < 0x4000) return 2;
  let n = 1;
  while (v >= 0x80) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}
