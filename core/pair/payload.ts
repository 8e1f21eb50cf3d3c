/** Packs encoded messages into one Data payload up to a byte limit. */
import { encodeMessage, encodeMessageInto, type Message } from '../../wire/messages.js';

/**
 * The fragmentation layer (§3.7) as a payload sees it. `add` takes a message too large for
 * any payload (false: full); `key` names it for its register, so a retransmission while it is
 * under way is not a second copy; `holds(key)` says so before the message is even encoded.
 */
export interface LargeSink {
  add(raw: Uint8Array, key: string | undefined): boolean;
  holds(key: string): boolean;
  /** Whether a message of about `bytes` would be taken now: asked before encoding one, since a full queue refuses it. */
  canTake(bytes: number): boolean;
}

export class PayloadBuilder {
  /**
   * The payload so far (positions 0..size): messages are encoded straight into it (`addMessage`)
   * or copied in (`add`), so a message costs no array of its own. One builder serves every poll
   * of a pair; finish() copies the payload once into the frame.
   */
  private readonly buf: Uint8Array;
  private size = 0;
  constructor(
    readonly limit: number,
    private readonly large?: LargeSink,
  ) {
    this.buf = new Uint8Array(limit);
  }

  /** Empty again for the next payload. */
  reset(): this {
    this.size = 0;
    return this;
  }

  get room(): number {
    return this.limit - this.size;
  }

  get empty(): boolean {
    return this.size === 0;
  }

  /**
   * Adds an encoded message if it fits; false leaves the payload unchanged. A message larger
   * than any payload goes to the fragmentation layer instead (true once it took it).
   */
  add(raw: Uint8Array, key?: string): boolean {
    const n = raw.length;
    if (n > this.limit && this.large) return this.large.add(raw, key);
    if (n > this.limit - this.size) return false;
    const buf = this.buf;
    const at = this.size;
    if (n > 64) buf.set(raw, at);
    else for (let i = 0; i < n; i++) buf[at + i] = raw[i];
    this.size = at + n;
    return true;
  }

  /** add(encodeMessage(m), key), encoding `m` in place: no array for a message that fits. */
  addMessage(m: Message, key?: string): boolean {
    const n = encodeMessageInto(m, this.buf, this.size);
    if (n > 0) {
      this.size += n;
      return true;
    }
    // It did not fit the room left (-n bytes): a message larger than any payload goes to the fragmentation layer.
    return -n > this.limit && this.large ? this.large.add(encodeMessage(m), key) : false;
  }

  /** Whether the large message named `key` is already queued, in flight or just delivered (then adding it again is a no-op). */
  holdsLarge(key: string): boolean {
    return this.large?.holds(key) ?? false;
  }

  /** Whether a large message of at most `bytes` would be taken now (ask before encoding it). */
  canTakeLarge(bytes: number): boolean {
    return this.large?.canTake(bytes) ?? false;
  }

  /**
   * The payload, `headroom` bytes into a buffer of exactly headroom + payload + tailroom bytes
   * (room for a frame header in front and an AEAD tag behind: sealed in place, no second copy).
   */
  finish(headroom = 0, tailroom = 0): Uint8Array {
    const out = new Uint8Array(headroom + this.size + tailroom);
    out.set(this.buf.subarray(0, this.size), headroom);
    return out;
  }
}
