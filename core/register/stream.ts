/** The `stream` register: append-only bytes addressed by offset (the wrappers' carrier). */
import { DeltaOp, RejectReason, type Delta, type SimpleDelta } from '../../wire/delta.js';
import { Hash64, Murmur3, laneSeeds } from './hash.js';
import type { StateBlock } from './state.js';

export class StreamState implements StateBlock {
  readonly kind = 'stream' as const;
  readonly hash = new Hash64();
  private readonly chunks: Uint8Array[] = [];
  private readonly chunkStarts: number[] = [];
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
    this.appendBytes(d.data.slice());
  }

  /** Append raw bytes (collapse, re-entanglement). Takes ownership of `data`. */
  appendBytes(data: Uint8Array): void {
    if (data.length === 0) return;
    this.chunks.push(data);
    this.chunkStarts.push(this.length);
    this.length += data.length;
    this.hiLane.update(data);
    this.loLane.update(data);
    this.refreshHash();
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
      const take = Math.min(c.length - from, end - pos);
      out.set(c.subarray(from, from + take), pos - offset);
      pos += take;
    }
    return out;
  }

  fullTransferBytes(): number {
    return this.length;
  }
}
