/**
 * Admission of carrier connections by a responder (PROTOCOL §16.2, *Unauthenticated
 * connections*): how many may be in their handshake at once (HandshakeSlots), and how fast
 * they are accepted (HandshakeAdmission). Sans-I/O: the clock is given. And of local
 * connections to a peer's slots, by user (slotRefusal, PROTOCOL §16.5.1).
 *
 * Rate of carrier handshakes a responder takes (PROTOCOL §16.2, *Unauthenticated
 * connections*): each accepted connection may cost a Diffie-Hellman before anything is known
 * of it, so accepts are admitted by two token buckets, one per source address and one for
 * all, each refilled at its rate per second and as deep as one second of it. A source that
 * is a configured peer's known address draws only on its own bucket: strangers that use up
 * the shared one never keep a peer's carrier from coming back. Sans-I/O: the clock is given.
 */
class Bucket {
  tokens: number;
  constructor(
    readonly rate: number,
    public at: number,
  ) {
    this.tokens = rate;
  }

  refill(now: number): number {
    if (now > this.at) this.tokens = Math.min(this.rate, this.tokens + ((now - this.at) * this.rate) / 1000);
    this.at = Math.max(this.at, now);
    return this.tokens;
  }
}

export type HandshakeRefusal = 'handshake-rate' | 'handshake-rate-source';

/**
 * Sources with a bucket not full are kept; past this many, full ones are swept (idle: those
 * not full were admitted within the last second, at most twice the global rate of them).
 */
const SWEEP_AT = 4096;

export class HandshakeAdmission {
  private readonly all: Bucket;
  private readonly bySource = new Map<string, Bucket>();

  constructor(
    readonly perSecond: number,
    readonly perSourcePerSecond: number,
    now: number,
  ) {
    this.all = new Bucket(perSecond, now);
  }

  /** Take one accept for `source`, or say which bucket is empty (nothing is taken then). */
  admit(now: number, source: string, peer: boolean): HandshakeRefusal | undefined {
    const own = this.bySource.get(source);
    if (own && own.refill(now) < 1) return 'handshake-rate-source';
    if (!peer && this.all.refill(now) < 1) return 'handshake-rate';
    if (!peer) this.all.tokens--;
    // A source is tracked only once admitted: at most (rate + depth) new ones a second.
    const b = own ?? new Bucket(this.perSourcePerSecond, now);
    b.tokens--;
    if (!own) {
      if (this.bySource.size >= Math.max(SWEEP_AT, 4 * this.perSecond)) this.sweep(now);
      this.bySource.set(source, b);
    }
    return undefined;
  }

  private sweep(now: number): void {
    for (const [s, b] of this.bySource) if (b.refill(now) >= b.rate) this.bySource.delete(s);
  }
}

export type HandshakeSlotRefusal = 'too-many-handshakes' | 'too-many-from-source';

/**
 * Carrier connections accepted and not yet adopted (authenticated, then their first record):
 * each holds a slot, in all and for its source address, so unauthenticated connections can
 * never use up the descriptors. Over either limit a new one is refused at once.
 */
export class HandshakeSlots {
  private pending = 0;
  private readonly bySource = new Map<string, number>();

  constructor(
    readonly max: number,
    readonly maxPerSource: number,
  ) {}

  /** Slots held in all. */
  get held(): number {
    return this.pending;
  }

  /** Which limit a new connection from `source` would pass, if any (nothing is taken). */
  full(source: string): HandshakeSlotRefusal | undefined {
    if (this.pending >= this.max) return 'too-many-handshakes';
    if ((this.bySource.get(source) ?? 0) >= this.maxPerSource) return 'too-many-from-source';
    return undefined;
  }

  take(source: string): void {
    this.pending++;
    this.bySource.set(source, (this.bySource.get(source) ?? 0) + 1);
  }

  release(source: string): void {
    this.pending--;
    const n = (this.bySource.get(source) ?? 1) - 1;
    if (n > 0) this.bySource.set(source, n);
    else this.bySource.delete(source);
  }
}

/** Why a new local connection (TCP, or UDP flow) finds no slot with its peer (PROTOCOL §16.5.1). */
export type SlotRefusal = 'too-many-connections' | 'user-share';

/**
 * Admission of a new local connection to a peer that holds `live` of its `max` slots (every
 * wrapped connection and UDP flow with that peer, whoever opened it): none past `max`; and the
 * last eighth of the slots (⌊max/8⌋: 128 of the default 1,024) is kept for users who hold less
 * than half of them, like ext4's reserved blocks: a connection that would leave fewer than
 * ⌊max/8⌋ slots free is refused (`user-share`) when its user already holds `held` >= max/2.
 * One user alone thus gets max - ⌊max/8⌋ slots, at least 7/8 (896 of 1,024), and another user
 * still gets one while the first holds every other. `held` undefined: the user is not known (a
 * record without a uid), and only the limit applies.
 */
export function slotRefusal(max: number, live: number, held: number | undefined): SlotRefusal | undefined {
  if (live >= max) return 'too-many-connections';
  if (held !== undefined && max - live - 1 < Math.floor(max / 8) && 2 * held >= max) return 'user-share';
  return undefined;
}

/** Why a new wrapped connection (one that costs this process a descriptor) is refused: see descriptorRefusal. */
export type DescriptorRefusal = 'too-many-descriptors' | 'descriptor-share';

/**
 * Admission of a new wrapped connection that costs this process a descriptor, when wrapped
 * connections of every peer hold `held` of the process-wide `cap` (drivers/wrap/fdlimit.ts): the
 * per-peer limit bounds no sum, and descriptors are the process's, the pairs' stores' too. None
 * past `cap`; and, as slotRefusal keeps a peer's last eighth for its smaller users, the last
 * eighth of the cap is kept for peers under their fair share: a connection that would leave
 * fewer than ⌊cap/8⌋ free is refused (`descriptor-share`) when its peer holds `peerHeld` >= cap
 * over the peers holding some (itself counted, at least 2: one peer alone stops at 7/8).
 */
export function descriptorRefusal(cap: number, held: number, peerHeld: number, peersHolding: number): DescriptorRefusal | undefined {
  if (held >= cap) return 'too-many-descriptors';
  const peers = Math.max(2, peersHolding + (peerHeld === 0 ? 1 : 0));
  if (cap - held - 1 < Math.floor(cap / 8) && peerHeld * peers >= cap) return 'descriptor-share';
  return undefined;
}
