/**
 * The two halves of a wrapped connection's `stream` register as each end holds them.
 *
 * SendStream: bytes read from the local socket, kept from the peer's acknowledged offset up to
 * the register's length, so that after a carrier loss the stream resends exactly what the peer
 * is missing. The window bounds that buffer: reading from the local socket pauses while it is
 * full (end-to-end backpressure).
 *
 * RecvStream: the offsets of bytes handed to the local socket (`received`) and flushed by it
 * (`drained`). Only drained bytes are acknowledged, so a slow local reader stops the sender.
 */
import { Deque } from '../util/deque.js';
import { MAX_DATA } from '../../wire/wrap.js';
import { unpinned } from '../util/pinned.js';

/**
 * Told after each change of what a SendStream has to send or holds in flight, with its
 * inFlight before the change: the session keeps its per-peer totals and its queue of
 * connections with something to send from this, instead of scanning every connection.
 */
export type SendChanged = (inFlightBefore: number) => void;

/** Its offsets and FIN state change only through its methods, each of which tells `changed`. */
export class SendStream {
  /** The peer has drained everything below this offset. */
  acked = 0;
  /** Next offset to put on the carrier. */
  next = 0;
  /** The register's length: bytes taken from the local socket. */
  end = 0;
  /** The local socket ended at this offset (finish()). */
  finAt: number | undefined;
  /** The FIN is on the carrier (finSentNow(); a rewind takes it back). */
  finSent = false;
  private readonly chunks = new Deque<{ offset: number; data: Uint8Array }>();
  /** Index in `chunks` where the scan for `next` starts (kept so take() is O(1) amortised). */
  private cursor = 0;

  /** `window`: lowered to the peer's advertised receive window once its HELLO is known. */
  constructor(
    public window: number,
    private readonly changed: SendChanged = () => {},
  ) {}

  /** Sent and not yet acknowledged: what the peer may be holding for this stream. */
  get inFlight(): number {
    return Math.max(0, this.next - this.acked);
  }

  get buffered(): number {
    return this.end - this.acked;
  }

  /** Room left in the window: reading from the local socket pauses at 0. */
  get room(): number {
    return Math.max(0, this.window - this.buffered);
  }

  append(data: Uint8Array): void {
    if (this.finAt !== undefined) throw new Error('append after end of stream');
    if (data.length === 0) return;
    this.chunks.push({ offset: this.end, data });
    this.end += data.length;
    this.changed(this.inFlight);
  }

  /** The local socket ended: the stream ends at what it holds now (idempotent). */
  finish(): void {
    if (this.finAt !== undefined) return;
    this.finAt = this.end;
    this.changed(this.inFlight);
  }

  /** The FIN went on the carrier. */
  finSentNow(): void {
    this.finSent = true;
    this.changed(this.inFlight);
  }

  /** Acknowledged up to `offset`: release what the peer holds. Returns false if the offset is impossible. */
  ack(offset: number): boolean {
    if (offset > this.end) return false;
    if (offset <= this.acked) return true;
    const before = this.inFlight;
    this.acked = offset;
    if (this.next < offset) this.next = offset;
    for (let c = this.chunks.peek(); c && c.offset + c.data.length <= offset; c = this.chunks.peek()) {
      this.chunks.shift();
      this.cursor = Math.max(0, this.cursor - 1);
    }
    this.changed(before);
    return true;
  }

  /** The carrier was lost: everything not acknowledged is sent again (or from the peer's RESUME). */
  rewind(): void {
    const before = this.inFlight;
    this.next = this.acked;
    this.finSent = false;
    this.cursor = 0;
    this.changed(before);
  }

  /** Back to `offset` (a NACK: the peer lacks a referenced chunk); what follows is resent. */
  rewindTo(offset: number): void {
    const before = this.inFlight;
    this.next = offset;
    this.finSent = false;
    this.cursor = 0;
    this.changed(before);
  }

  /** `n` bytes at `next` went out by reference, not as bytes. */
  skipSent(n: number): void {
    const before = this.inFlight;
    this.next = Math.min(this.end, this.next + n);
    this.changed(before);
  }

  /** The peer reports it already holds everything below `offset`. */
  skipTo(offset: number): boolean {
    if (offset > this.end || offset < this.acked) return false;
    if (offset > this.next) {
      const before = this.inFlight;
      this.next = offset;
      this.changed(before);
    }
    return true;
  }

  /**
   * Up to MAX_DATA bytes at `next`, as views of the buffered chunks (no copy), or undefined
   * when everything is on the carrier.
   */
  take(max = MAX_DATA): { offset: number; parts: Uint8Array[] } | undefined {
    if (this.next >= this.end || max <= 0) return undefined;
    if (this.cursor >= this.chunks.length || this.chunks.at(this.cursor).offset > this.next) this.cursor = 0;
    const before = this.inFlight;
    const offset = this.next;
    const parts: Uint8Array[] = [];
    let room = Math.min(max, MAX_DATA);
    for (let i = this.cursor; i < this.chunks.length && room > 0; i++) {
      const c = this.chunks.at(i);
      if (c.offset + c.data.length <= this.next) continue;
      const from = this.next - c.offset;
      const piece = c.data.subarray(from, from + Math.min(room, c.data.length - from));
      parts.push(piece);
      this.next += piece.length;
      room -= piece.length;
      this.cursor = i;
    }
    if (parts.length) this.changed(before);
    return parts.length ? { offset, parts } : undefined;
  }

  /** The bytes from the acknowledged offset to the end (a copy), for a handover (core/wrap/handover.ts). */
  unacked(): Uint8Array {
    const out = new Uint8Array(this.end - this.acked);
    for (let i = 0; i < this.chunks.length; i++) {
      const c = this.chunks.at(i);
      const from = Math.max(0, this.acked - c.offset);
      if (from < c.data.length) out.set(c.data.subarray(from), c.offset + from - this.acked);
    }
    return out;
  }

  /** A stream handed over by the previous process: acknowledged up to `acked`, then `bytes`, nothing on the carrier. */
  restore(acked: number, bytes: Uint8Array, fin: boolean): void {
    const before = this.inFlight;
    this.acked = this.next = this.end = acked;
    this.changed(before);
    this.append(bytes);
    if (fin) this.finish();
  }

  /** A FIN is due: everything up to the end is on the carrier. */
  get finDue(): boolean {
    return this.finAt !== undefined && !this.finSent && this.next >= this.finAt;
  }

  /** Ended, the FIN on the carrier and every byte acknowledged. */
  get done(): boolean {
    return this.finAt !== undefined && this.finSent && this.acked >= this.finAt;
  }

  get ended(): boolean {
    return this.finAt !== undefined;
  }
}

export class RecvStream {
  /** Bytes handed to the local socket. */
  received = 0;
  /** Bytes the local socket has flushed (what ACK reports). */
  drained = 0;
  ackSent = 0;
  finAt: number | undefined;
  endDelivered = false;

  /**
   * A DATA record at `offset`: the bytes not already received, or undefined for a pure
   * duplicate. A gap (offset beyond what was received) is a protocol error: the carrier is ordered.
   */
  accept(offset: number, data: Uint8Array): Uint8Array | undefined | 'gap' {
    if (offset > this.received) return 'gap';
    const skip = this.received - offset;
    if (skip >= data.length) return undefined;
    // A resent record's new tail alone is a view of the whole record (of its read): copied when
    // it is under half of what it would keep alive (a 60 KB record with one new octet, 500 times,
    // kept 28.6 MiB where the quotas counted 500 octets).
    const fresh = skip > 0 ? unpinned(data.subarray(skip)) : data;
    this.received += fresh.length;
    return fresh;
  }

  get ackDue(): boolean {
    return this.drained > this.ackSent;
  }

  /** The peer's FIN is due to the local socket: every byte before it was handed over. */
  get endDue(): boolean {
    return this.finAt !== undefined && !this.endDelivered && this.received >= this.finAt;
  }
}
