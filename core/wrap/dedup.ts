/**
 * Delta mode (PROTOCOL §16.9): a stream range the peer already holds is sent as a reference
 * instead of its bytes. Both ends cut each stream into content-defined chunks (a gear rolling
 * hash, as FastCDC [Xia16] and LBFS [Muthitacharoen01] do: boundaries depend on the content,
 * so an insertion early in a stream does not shift every later chunk), name each chunk by a
 * truncated SHA-256, and keep the chunks of recent traffic with that peer. The sender sends a
 * REF for a chunk it sent (or referenced) before; the receiver expands it from its cache, or
 * answers NACK and the sender resends the bytes. This is what makes "the same HTTP resource
 * again" or "the same retained MQTT message again" nearly free, whatever the protocol.
 */
import { incrementalHash } from '../../crypto/primitives.js';
import { CHUNK_MAX, DIGEST_LEN } from '../../wire/wrap.js';
import { roomFor } from '../../wire/buffer.js';

export { CHUNK_MAX, DIGEST_LEN };

export const CHUNK_MIN = 2 * 1024;
/**
 * 13 bits, boundaries about every 8 KiB past the minimum. The top bits of the gear hash, as
 * FastCDC does: they depend on the last 32 bytes, the low bits only on the last 13.
 */
const CHUNK_MASK = 0xfff80000;
/** The first buffer a chunk's bytes are gathered in (Chunker, keepBytes); each next one doubles, to CHUNK_MAX. */
const KEEP_FIRST = 256;
/** Chunks each side remembers per peer (by bytes): the two caches see the same operations. */
export const CACHE_BYTES = 64 * 1024 * 1024;

/** The gear table: 256 fixed pseudo-random words (xorshift32 from a fixed seed), identical everywhere. */
const GEAR = (() => {
  const t = new Uint32Array(256);
  let x = 0x5350_4b31;
  for (let i = 0; i < 256; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    t[i] = x >>> 0;
  }
  return t;
})();

export interface Chunk {
  offset: number;
  length: number;
  /** The first DIGEST_LEN octets of the chunk's SHA-256. */
  digest: Uint8Array;
  /** The digest as a map key. */
  key: string;
  /** The chunk's bytes, when the chunker keeps them (the receiver caches them). */
  bytes?: Uint8Array;
}

export const digestKey = (d: Uint8Array): string => Buffer.from(d.buffer, d.byteOffset, d.byteLength).toString('base64');

/**
 * Cuts a byte stream into chunks as bytes arrive and digests each one incrementally. With
 * `keepBytes` it also returns each chunk's bytes (at most CHUNK_MAX are ever held).
 */
export class Chunker {
  private h = 0;
  private start = 0;
  private len = 0;
  private hash = incrementalHash('SHA256');
  /**
   * The bytes of the chunk in progress (keepBytes), copied together as they arrive: holding the
   * pieces themselves cost an object (and what it pins) per piece, some 200 octets for each
   * 1-octet DATA record of a stream of zeros (which never cuts before CHUNK_MAX).
   */
  private kept: Uint8Array | undefined;

  constructor(private readonly keepBytes = false) {}

  /** Feed the next bytes of the stream; returns the chunks they complete, in order. */
  push(data: Uint8Array): Chunk[] {
    const out: Chunk[] = [];
    let from = 0;
    let h = this.h;
    for (let i = 0; i < data.length; i++) {
      h = ((h << 1) + GEAR[data[i]]) >>> 0;
      const len = this.len + (i - from) + 1;
      if ((len >= CHUNK_MIN && (h & CHUNK_MASK) === 0) || len >= CHUNK_MAX) {
        this.take(data.subarray(from, i + 1));
        out.push(this.cut());
        from = i + 1;
        h = 0;
      }
    }
    this.h = h;
    if (from < data.length) this.take(data.subarray(from));
    return out;
  }

  /** The stream skipped a chunk the peer referenced: it ended at a boundary, as if fed. */
  skip(length: number): void {
    this.start += length;
  }

  /** At a chunk boundary (nothing of a chunk in progress). */
  get atBoundary(): boolean {
    return this.len === 0;
  }

  private take(piece: Uint8Array): void {
    this.hash.update(piece);
    if (this.keepBytes) {
      // At most CHUNK_MAX: push cuts there.
      this.kept = roomFor(this.kept, this.len, this.len + piece.length, KEEP_FIRST, CHUNK_MAX);
      this.kept.set(piece, this.len);
    }
    this.len += piece.length;
  }

  private cut(): Chunk {
    const digest = new Uint8Array(this.hash.digest().subarray(0, DIGEST_LEN));
    const c: Chunk = { offset: this.start, length: this.len, digest, key: digestKey(digest) };
    if (this.keepBytes) {
      // Exactly its size (what the cache counts): the gathering buffer itself if it is, else a copy.
      const k = this.kept ?? new Uint8Array(0);
      c.bytes = k.length === this.len ? k : k.slice(0, this.len);
    }
    this.start += this.len;
    this.len = 0;
    this.kept = undefined;
    this.hash = incrementalHash('SHA256');
    return c;
  }
}

/** A byte-bounded LRU keyed by chunk digest (Map order is the recency order). */
export class ChunkLru<V> {
  private readonly items = new Map<string, { length: number; value: V }>();
  private bytes = 0;

  constructor(private readonly capacity = CACHE_BYTES) {}

  /** Mark as most recent; returns the value, or undefined if absent. */
  touch(digest: string): V | undefined {
    const e = this.items.get(digest);
    if (!e) return undefined;
    this.items.delete(digest);
    this.items.set(digest, e);
    return e.value;
  }

  put(digest: string, length: number, value: V): void {
    const old = this.items.get(digest);
    if (old) {
      this.items.delete(digest);
      this.bytes -= old.length;
    }
    this.items.set(digest, { length, value });
    this.bytes += length;
    for (const [k, e] of this.items) {
      if (this.bytes <= this.capacity) break;
      this.items.delete(k);
      this.bytes -= e.length;
    }
  }

  clear(): void {
    this.items.clear();
    this.bytes = 0;
  }
}
