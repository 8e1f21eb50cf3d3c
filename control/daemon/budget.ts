/**
 * A per-peer work budget: a token bucket of CPU milliseconds. Handling a peer's datagrams
 * draws what it actually took (measured after the fact, so one expensive datagram leaves
 * the peer in debt); while the bucket is empty, that peer's datagrams are dropped unopened
 * and counted, so one peer cannot starve the others. ESTP retransmits and Raft resends,
 * so a throttled honest peer only slows down.
 */
export class WorkBudget {
  private tokens: number;
  private at: number;
  /** Datagrams refused while over budget. */
  refused = 0;
  /** Milliseconds charged in total. */
  spentMs = 0;

  constructor(
    /** Milliseconds of work per second of wall time (the refill rate, and the bucket's depth). */
    readonly msPerSecond: number,
    now: number,
  ) {
    this.tokens = msPerSecond;
    this.at = now;
  }

  private refill(now: number): void {
    if (now > this.at) this.tokens = Math.min(this.msPerSecond, this.tokens + ((now - this.at) * this.msPerSecond) / 1000);
    this.at = Math.max(this.at, now);
  }

  /** Whether the peer may have more work now; counts a refusal when not. */
  admit(now: number): boolean {
    this.refill(now);
    if (this.tokens > 0) return true;
    this.refused++;
    return false;
  }

  charge(ms: number): void {
    this.tokens -= ms;
    this.spentMs += ms;
  }

  /** How long until the peer may have more work (0: now); a stream reader pauses this long. */
  waitMs(now: number): number {
    this.refill(now);
    return this.tokens > 0 ? 0 : Math.ceil((-this.tokens * 1000) / this.msPerSecond) + 1;
  }
}
