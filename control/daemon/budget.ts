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

  /** Whether the bucket is full again: nothing is owed, and forgetting it loses nothing. */
  settled(now: number): boolean {
    this.refill(now);
    return this.tokens >= this.msPerSecond;
  }
}

/**
 * Work no peer authenticated: Data frames that fail to open (forged, replayed) are charged to
 * their source address, never to the peer their pair id names, or anyone who sees pair ids
 * could spend an honest peer's budget (§12.9). A bounded table of per-address buckets; while
 * an address is in debt its Data frames are dropped before the AEAD. When the table is full,
 * addresses with nothing owed are forgotten (at most once a second); failing frames from
 * addresses beyond are not charged (they cost what the network delivers, as any datagram).
 */
export class SourceBudgets {
  private readonly table = new Map<string, WorkBudget>();
  private prunedAt = -Infinity;

  constructor(
    readonly msPerSecond: number,
    readonly maxSources: number,
  ) {}

  /** Whether frames from `source` may be opened now; counts a refusal when not. */
  admit(now: number, source: string): boolean {
    const b = this.table.get(source);
    return b === undefined || b.admit(now);
  }

  charge(now: number, source: string, ms: number): void {
    let b = this.table.get(source);
    if (!b) {
      if (this.table.size >= this.maxSources && now - this.prunedAt >= 1000) {
        this.prunedAt = now;
        for (const [k, v] of this.table) if (v.settled(now)) this.table.delete(k);
      }
      if (this.table.size >= this.maxSources) return;
      b = new WorkBudget(this.msPerSecond, now);
      this.table.set(source, b);
    }
    b.charge(ms);
  }

  get size(): number {
    return this.table.size;
  }
}
