/** The `stream` register: append-only bytes addressed by offset (the wrappers' carrier). */
import { DeltaOp, RejectReason, type Delta, type SimpleDelta } from '../../wire/delta.js';
import { Hash64, Murmur3, laneSeeds } from './hash.js';
import type { StateBlock } from './state.js';
import { roomFor } from '../../wire/buffer.js';

/** The largest chunk small appends are gathered into: a chunk's bookkeeping (~200 bytes) is then noise. */
export const STREAM_CHUNK_BYTES = 64 * 1024;
/** The smallest capacity a chunk starts with. */
const FIRST_CAPACITY = 256;

/** The smallest power of two at least `n`, at least FIRST_CAPACITY, at most STREAM_CHUNK_BYTES. */
function capacityFor(n: number): number {
  let c = FIRST_CAPACITY;
  while (c < n && c < STREAM_CHUNK_BYTES) c *= 2;
  return c;
}

export class StreamState implements StateBlock {
  readonly kind = 'stream' as const;
  readonly hash = new Hash64();
  /**
   * The bytes, in chunks: chunk i holds [chunkStarts[i], chunkStarts[i+1]) (the last up to
   * `length`). Appends are gathered: small ones are copied into `tail`, the last chunk, which
   * grows by doubling up to STREAM_CHUNK_BYTES; only an append of at least that many bytes is a
   * chunk of its own. Before, each append was one (a peer's 1-byte appends held ~230 bytes of
   * memory per byte its quota counted). Nothing outside reads a chunk: `read` copies, so the
   * spare room of `tail` is written without changing any bytes handed out.
   */
  private readonly chunks: Uint8Array[] = [];
  private readonly chunkStarts: number[] = [];
  /** The last chunk when it is one of ours with room to grow into (its filled part: `length - chunkStarts[last]`). */
  private tail: Uint8Array | undefined;
  private length = 0;
  // Streaming hashes over all bytes ever appended: chunking-independent, O(len) per append.
  private readonly hiLane: Murmur3;
  private readonly loLane: Murmur3;

  constructor(readonly seed: number) {
    const [hi, lo] = laneSeeds(seed);
    this.hiLane = new Murmur3().reset(hi);
    this.loLane = new Murmur3().reset(lo);
    this.refreshHash();
  }

  size(): number {
    return this.length;
  }

  check(d: Delta): RejectReason | 0 {
    if (d.op === DeltaOp.Txn) return this.txnFailure(d.ops)?.reason ?? 0;
    if (d.op !== DeltaOp.Append) return RejectReason.WrongKind;
    return d.offset === this.length ? 0 : RejectReason.AppendOffset;
  }

  /** The first op of a txn that fails, and why: each append must land where the previous one leaves the stream. */
  txnFailure(ops: readonly SimpleDelta[]): { op: number; reason: RejectReason } | undefined {
    let end = this.length;
    for (let i = 0; i < ops.length; i++) {
      const o = ops[i];
      if (o.op !== DeltaOp.Append) return { op: i, reason: RejectReason.WrongKind };
      if (o.offset !== end) return { op: i, reason: RejectReason.AppendOffset };
      end += o.data.length;
    }
    return undefined;
  }

  apply(d: Delta, version: number): void {
    if (d.op === DeltaOp.Txn) {
      for (const o of d.ops) this.apply(o, version);
      return;
    }
    if (d.op !== DeltaOp.Append) throw new Error('map delta applied to a stream register (check() rejects it)');
    this.appendBytes(d.data, false);
  }

  /**
   * Append raw bytes (collapse, re-entanglement). `owned` (the default): the caller gives `data`
   * up, and a large one that is a whole buffer is kept as it is; otherwise (and always for small
   * data) the bytes are copied.
   */
  appendBytes(data: Uint8Array, owned = true): void {
    const n = data.length;
    if (n === 0) return;
    this.hiLane.update(data);
    this.loLane.update(data);
    this.refreshHash();
    if (n >= STREAM_CHUNK_BYTES) {
      this.seal();
      const whole = owned && data.byteOffset === 0 && data.byteLength === data.buffer.byteLength;
      this.chunks.push(whole ? data : data.slice());
      this.chunkStarts.push(this.length);
      this.length += n;
      return;
    }
    let at = 0;
    while (at < n) {
      let tail = this.tail;
      const filled = tail === undefined ? 0 : this.length - this.chunkStarts[this.chunkStarts.length - 1];
      if (tail === undefined || (filled === tail.length && tail.length >= STREAM_CHUNK_BYTES)) {
        // A new chunk, sized for the stream so far (a small stream keeps a small one).
        this.seal();
        tail = new Uint8Array(capacityFor(Math.max(n - at, this.length)));
        this.tail = tail;
        this.chunks.push(tail);
        this.chunkStarts.push(this.length);
      } else if (filled + (n - at) > tail.length && tail.length < STREAM_CHUNK_BYTES) {
        // Grow by doubling (amortised O(1) per byte); only the filled part moves.
        tail = roomFor(tail, filled, Math.min(filled + (n - at), STREAM_CHUNK_BYTES), FIRST_CAPACITY, STREAM_CHUNK_BYTES);
        this.tail = tail;
        this.chunks[this.chunks.length - 1] = tail;
      }
      const take = Math.min(n - at, tail.length - filled);
      tail.set(data.subarray(at, at + take), filled);
      at += take;
      this.length += take;
    }
  }

  /** The tail is done growing: trimmed to its filled part when that leaves room unused (a large append follows it). */
  private seal(): void {
    const tail = this.tail;
    if (tail === undefined) return;
    this.tail = undefined;
    const filled = this.length - this.chunkStarts[this.chunkStarts.length - 1];
    if (filled < tail.length) this.chunks[this.chunks.length - 1] = tail.slice(0, filled);
  }

  private refreshHash(): void {
    this.hash.hi = this.hiLane.digest();
    this.hash.lo = this.loLane.digest();
  }

  /** The hash the stream would have after appending `chunks`, without appending them. */
  hashAfter(chunks: Uint8Array[]): { hi: number; lo: number } {
    const hi = this.hiLane.clone();
    const lo = this.loLane.clone();
    for (const c of chunks) {
      hi.update(c);
      lo.update(c);
    }
    return { hi: hi.digest(), lo: lo.digest() };
  }

  /** Bytes [offset, offset+len) clipped to the stream's length. */
  read(offset: number, len: number): Uint8Array {
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(len) || len < 0)
      throw new RangeError(`stream read ${offset}+${len}: not a valid range`);
    const end = Math.min(this.length, offset + len);
    if (offset >= end) return new Uint8Array(0);
    const out = new Uint8Array(end - offset);
    // Binary search for the chunk holding `offset`.
    let lo = 0;
    let hi = this.chunks.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.chunkStarts[mid] <= offset) lo = mid;
      else hi = mid - 1;
    }
    let pos = offset;
    for (let i = lo; pos < end; i++) {
      const c = this.chunks[i];
      const from = pos - this.chunkStarts[i];
      // A chunk's own end, not its buffer's: the tail has room beyond what it holds.
      const chunkEnd = i + 1 < this.chunks.length ? this.chunkStarts[i + 1] : this.length;
      const take = Math.min(chunkEnd - pos, end - pos);
      out.set(c.subarray(from, from + take), pos - offset);
      pos += take;
    }
    return out;
  }

  fullTransferBytes(): number {
    return this.length;
  }
}
