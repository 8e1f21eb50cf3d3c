/** Packs encoded messages into one Data payload up to a byte limit. */
import { Writer } from '../../wire/buffer.js';

/**
 * Takes a message too large for any payload to send as fragments (§3.4); `key` names it for
 * its register so a retransmission while it is under way is not a second copy. False: full.
 */
export type LargeSink = (raw: Uint8Array, key: string | undefined) => boolean;

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
    if (raw.length > this.limit && this.large) return this.large(raw, key);
    if (raw.length > this.room) return false;
    this.w.bytes(raw);
    return true;
  }

  finish(): Uint8Array {
    return this.w.finish();
  }
}
