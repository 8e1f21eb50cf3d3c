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

/**
 * One scratch buffer for every builder: pollTransmit builds one payload per call and most calls
 * (the last of each send loop) find nothing to send, so a zeroed MTU-sized buffer per builder
 * was a quarter of a hub's pollTransmit time (bench scale). A builder owns the scratch from its
 * construction until the next builder is made; `finish` copies the payload out. Builders are
 * never interleaved (a core is synchronous, and nothing a builder calls makes another): one
 * used after a newer one was made throws rather than send the newer one's bytes.
 */
let scratch = new Uint8Array(0);
let owner = 0;

export class PayloadBuilder {
  private pos = 0;
  private readonly id: number;
  constructor(
    readonly limit: number,
    private readonly large?: LargeSink,
  ) {
    this.id = ++owner;
    if (scratch.length < limit) scratch = new Uint8Array(limit);
  }

  get room(): number {
    return this.limit - this.pos;
  }

  get empty(): boolean {
    return this.pos === 0;
  }

  /**
   * Adds an encoded message if it fits; false leaves the payload unchanged. A message larger
   * than any payload goes to the fragmentation layer instead (true once it took it).
   */
  add(raw: Uint8Array, key?: string): boolean {
    if (raw.length > this.limit && this.large) return this.large.add(raw, key);
    if (raw.length > this.room) return false;
    this.own().set(raw, this.pos);
    this.pos += raw.length;
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
    return this.own().slice(0, this.pos);
  }

  private own(): Uint8Array {
    if (this.id !== owner) throw new Error('PayloadBuilder used after a newer one was made (they share one scratch buffer)');
    return scratch;
  }
}
