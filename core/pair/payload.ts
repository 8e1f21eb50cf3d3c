/** Packs encoded messages into one Data payload up to a byte limit. */
import { Writer } from '../../wire/buffer.js';

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
  private readonly w: Writer;
  constructor(
    readonly limit: number,
    private readonly large?: LargeSink,
  ) {
    this.w = new Writer(limit);
  }

  get room(): number {
    return this.limit - this.w.pos;
  }

  get empty(): boolean {
    return this.w.pos === 0;
  }

  /**
   * Adds an encoded message if it fits; false leaves the payload unchanged. A message larger
   * than any payload goes to the fragmentation layer instead (true once it took it).
   */
  add(raw: Uint8Array, key?: string): boolean {
    if (raw.length > this.limit && this.large) return this.large.add(raw, key);
    if (raw.length > this.room) return false;
    this.w.bytes(raw);
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

  finish(): Uint8Array {
    return this.w.finish();
  }
}
