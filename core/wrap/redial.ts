/**
 * When the dialling side of a carrier (PROTOCOL §16.1) tries again: sans-I/O, `now` passed in.
 *
 * A healed link must be found within a second (issue 17: traffic resumes within 1 s of the
 * link's return), so the interval between attempts doubles from REDIAL_MS only up to
 * REDIAL_MAX_MS, and attempts overlap: one whose SYN was lost in the outage waits for the
 * kernel's SYN retransmissions (1 s, then 2 s later) up to its own timeout, and a fresh attempt
 * starting every REDIAL_MAX_MS meanwhile is what finds the link as soon as it returns.
 * Against a dead peer that costs at most 1000 / REDIAL_MAX_MS new connection attempts a
 * second, each sending at most three SYNs (at 0, 1 and 3 s) before its timeout, and at most
 * `maxInFlight` sockets at once; a peer that refuses (RST) or a local route that is gone
 * fails each attempt at once, so it costs one SYN, or nothing, per interval. The peer's own
 * authenticated ETCP packets bring the next attempt forward (heard()): they show its path works
 * now, or that it moved to a new address (drivers/wrap/roam.ts).
 */

/** The first interval between attempts; it doubles up to REDIAL_MAX_MS while they fail. */
export const REDIAL_MS = 250;
/** The longest interval between two attempts: a healed link is found within this (plus a round trip). */
export const REDIAL_MAX_MS = 500;
/**
 * The shortest interval between two attempts when the peer's authenticated ETCP packets bring
 * the next one forward (heard()): a peer whose packets arrive while the carrier is down, or
 * from a new address, gets an attempt at once, but at most one per this.
 */
export const HEARD_MIN_GAP_MS = 100;

export class Redialer {
  /** The interval after the next attempt starts. */
  private interval = REDIAL_MS;
  /** When the next attempt may start (0: at once, as at start-up). */
  private next = 0;
  private inFlight = 0;
  /** When the last attempt started. */
  private lastStart = -Infinity;

  constructor(
    /** Attempts at once: an attempt's timeout / REDIAL_MAX_MS covers a blackholed peer without gaps. */
    readonly maxInFlight: number,
  ) {}

  /** Attempts started and not yet finished. */
  get dialing(): number {
    return this.inFlight;
  }

  /** When the next attempt may start (undefined: as many are in flight as allowed). */
  nextAt(): number | undefined {
    return this.inFlight >= this.maxInFlight ? undefined : this.next;
  }

  /** May an attempt start now? */
  due(now: number): boolean {
    return this.inFlight < this.maxInFlight && now >= this.next;
  }

  /** An attempt starts: the next one waits the interval from now, and the interval doubles (capped). */
  started(now: number): void {
    this.inFlight++;
    this.lastStart = now;
    this.next = now + this.interval;
    this.interval = Math.min(REDIAL_MAX_MS, this.interval * 2);
  }

  /** An attempt ended, whether it failed or produced a carrier. */
  finished(): void {
    this.inFlight = Math.max(0, this.inFlight - 1);
  }

  /**
   * An authenticated packet from the peer arrived at `now` while the carrier is down or goes to
   * an address the peer no longer uses: its path works now (a healed link, a new address), so
   * the next attempt starts at once, HEARD_MIN_GAP_MS after the previous one at the earliest.
   * The backoff is unchanged: a peer whose packets come but whose carrier port does not answer
   * costs at most 1000 / HEARD_MIN_GAP_MS attempts a second, and maxInFlight at once.
   */
  heard(now: number): void {
    this.next = Math.min(this.next, Math.max(now, this.lastStart + HEARD_MIN_GAP_MS));
  }

  /** A carrier is up: the next loss starts from the first interval again. */
  up(): void {
    this.interval = REDIAL_MS;
  }

  /**
   * The carrier was lost at `now`: the first attempt waits REDIAL_MS (a peer that closed the
   * carrier on purpose, or is restarting, is not hammered at once), later ones back off.
   */
  lost(now: number): void {
    this.interval = REDIAL_MS;
    this.next = now + REDIAL_MS;
  }
}
