/**
 * Per-peer work budgets: a token bucket of CPU milliseconds per peer. Handling a peer's
 * datagrams (and its wrapper carriers' records) draws what it actually took, measured after
 * the fact, so one expensive datagram leaves the peer in debt; while its bucket is empty,
 * its datagrams are dropped unopened and its carriers stop reading, so one peer cannot
 * starve the others. ESTP retransmits, Raft resends and TCP holds the sender back, so a
 * throttled honest peer only slows down.
 *
 * The budgets are *work-conserving*, like CPU shares rather than a hard cap: a peer over
 * its budget is held back only while another peer of the same pool has work of its own
 * (did at least ACTIVE_MS of work, or sent at least ACTIVE_FRAMES frames, in about the last
 * second). A lone bulk transfer runs at
 * full speed; the moment another peer needs the host, the busy one is held to its rate.
 * While nobody else is busy a peer's debt is forgiven (its bucket floors at empty), so it
 * is throttled at once when contention starts, and no longer than its own rate dictates.
 */

/** About how long work counts as recent (the decay constant), in ms. */
const RECENT_MS = 1000;
/** Recent work (ms) that makes a peer "busy" for the others' budgets: more than keepalives. */
const ACTIVE_MS = 2;
/**
 * Or recent frames asking to be handled (countDemand): a light peer whose frames are cheap, or
 * wait behind a flood, still shows that it needs the host. Keepalives (about one a second) and
 * Raft heartbeats (ten) stay below. The peer table counts only frames that authenticate as the
 * peer's: anyone who sees a pair id can send frames naming it.
 */
const ACTIVE_FRAMES = 20;

export class BudgetPool {
  private readonly budgets = new Set<WorkBudget>();

  constructor(readonly clock: () => number) {}

  /** A budget of `msPerSecond` for one peer, sharing the host with the pool's others. */
  add(msPerSecond: number): WorkBudget {
    const b = new WorkBudget(msPerSecond, this.clock(), this);
    this.budgets.add(b);
    return b;
  }

  /** A peer removed (a reload): its budget no longer counts as another's contention. */
  remove(b: WorkBudget): void {
    this.budgets.delete(b);
  }

  /** Whether some budget other than `self` is busy at `now`. */
  contended(self: WorkBudget, now: number): boolean {
    for (const b of this.budgets) if (b !== self && (b.recentWork(now) >= ACTIVE_MS || b.recentDemand(now) >= ACTIVE_FRAMES)) return true;
    return false;
  }
}

export class WorkBudget {
  private tokens: number;
  private at: number;
  /** Exponentially decayed work (ms), as of recentAt. */
  private recent = 0;
  private recentAt: number;
  /** Exponentially decayed count of frames that asked to be handled, as of demandAt. */
  private demand = 0;
  private demandAt: number;
  /** Datagrams refused while over budget. */
  refused = 0;
  /** Milliseconds charged in total. */
  spentMs = 0;

  constructor(
    /** Milliseconds of work per second of wall time (the refill rate, and the bucket's depth). */
    readonly msPerSecond: number,
    now: number,
    /** Without a pool the budget is a hard cap (nothing else to conserve work for). */
    private readonly pool?: BudgetPool,
  ) {
    this.tokens = msPerSecond;
    this.at = now;
    this.recentAt = now;
    this.demandAt = now;
  }

  private refill(now: number): void {
    if (now > this.at) this.tokens = Math.min(this.msPerSecond, this.tokens + ((now - this.at) * this.msPerSecond) / 1000);
    this.at = Math.max(this.at, now);
  }

  /** Work done in about the last second (ms). */
  recentWork(now: number): number {
    if (now > this.recentAt) {
      this.recent *= Math.exp(-(now - this.recentAt) / RECENT_MS);
      this.recentAt = now;
    }
    return this.recent;
  }

  /** Frames that asked to be handled in about the last second. */
  recentDemand(now: number): number {
    if (now > this.demandAt) {
      this.demand *= Math.exp(-(now - this.demandAt) / RECENT_MS);
      this.demandAt = now;
    }
    return this.demand;
  }

  private held(now: number): boolean {
    return this.pool === undefined || this.pool.contended(this, now);
  }

  /** Whether the peer may have more work now; counts a refusal when not (no demand: see countDemand). */
  allows(now: number): boolean {
    this.refill(now);
    if (this.tokens > 0 || !this.held(now)) return true;
    this.refused++;
    return false;
  }

  /**
   * One frame of the peer's asked to be handled (ACTIVE_FRAMES). Only a frame known to be the
   * peer's: the peer table counts a Data frame once it has opened, never before the AEAD, or
   * forged frames naming the peer's pair id would make it look busy (§12.9).
   */
  countDemand(now: number): void {
    this.recentDemand(now);
    this.demand += 1;
  }

  /** countDemand and allows: for a caller whose work items are all the peer's. */
  admit(now: number): boolean {
    this.countDemand(now);
    return this.allows(now);
  }

  charge(ms: number): void {
    const now = this.pool?.clock() ?? this.at;
    this.refill(now);
    this.recentWork(now);
    this.recent += ms;
    this.spentMs += ms;
    this.tokens -= ms;
    // Uncontended, debt is forgiven: the bucket floors at empty.
    if (this.tokens < 0 && !this.held(now)) this.tokens = 0;
  }

  /** How long until the peer may have more work (0: now); a stream reader pauses this long. */
  waitMs(now: number): number {
    this.refill(now);
    if (this.tokens > 0 || !this.held(now)) return 0;
    return Math.ceil((-this.tokens * 1000) / this.msPerSecond) + 1;
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
