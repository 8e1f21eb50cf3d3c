/**
 * One warning per key (a peer or a source address) per interval, the rest counted: a flood of
 * refused handshakes must not turn into a flood of log lines (or of disk writes). The number
 * of keys is bounded; past it, keys share one overflow slot.
 */
export const WARN_INTERVAL_MS = 60_000;
const MAX_KEYS = 1024;

export class WarnLimiter {
  private readonly last = new Map<string, { at: number; suppressed: number }>();
  /** Warnings not logged since start (the metric `spook_warnings_suppressed_total`). */
  suppressed = 0;

  constructor(
    readonly intervalMs = WARN_INTERVAL_MS,
    private readonly maxKeys = MAX_KEYS,
  ) {}

  /** Undefined when the warning is suppressed; else how many were suppressed for `key` since its last one. */
  admit(now: number, key: string): number | undefined {
    if (!this.last.has(key) && this.last.size >= this.maxKeys) {
      for (const [k, v] of this.last) if (now - v.at >= this.intervalMs) this.last.delete(k);
      if (this.last.size >= this.maxKeys) key = '(other sources)';
    }
    const e = this.last.get(key);
    if (e && now - e.at < this.intervalMs) {
      e.suppressed++;
      this.suppressed++;
      return undefined;
    }
    this.last.set(key, { at: now, suppressed: 0 });
    return e?.suppressed ?? 0;
  }
}
