/**
 * A rate limit as the generic cell rate algorithm (GCRA, ITU-T I.371): a burst of `burst`
 * events, then one per `intervalMs`. Pure: the caller passes `now`.
 */
export class Gcra {
  /** Theoretical arrival time of the next event at the sustained rate. */
  private tat = -Infinity;

  constructor(
    readonly burst: number,
    readonly intervalMs: number,
  ) {}

  /** The earliest time (≥ now) the next event conforms. */
  next(now: number): number {
    return Math.max(now, this.tat - (this.burst - 1) * this.intervalMs);
  }

  /** Count an event at `t` (a time next() allowed). */
  take(t: number): void {
    this.tat = Math.max(this.tat, t) + this.intervalMs;
  }
}
