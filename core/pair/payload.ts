/** Packs encoded messages into one Data payload up to a byte limit. */

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
  /** The messages taken, joined once by finish(): no payload-sized buffer for a poll that ends up empty or small. */
  private readonly parts: Uint8Array[] = [];
  private size = 0;
  constructor(
    readonly limit: number,
    private readonly large?: LargeSink,
  ) {}

  /** Empty again for the next payload: one builder serves every poll of a pair (no object per poll). */
  reset(): this {
    this.parts.length = 0;
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
    if (raw.length > this.limit && this.large) return this.large.add(raw, key);
    if (raw.length > this.room) return false;
    this.parts.push(raw);
    this.size += raw.length;
    return true;
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
    let at = headroom;
    for (const p of this.parts) {
      out.set(p, at);
      at += p.length;
    }
    this.parts.length = 0; // the messages are in the payload now: not held until the next poll
    return out;
  }
}
