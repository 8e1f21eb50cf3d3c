/**
 * One warning per key (a peer or a source address) per interval, the rest counted: a flood of
 * refused handshakes must not turn into a flood of log lines (or of disk writes). The number
 * of keys is bounded; past it, keys share one overflow slot.
 */
export const WARN_INTERVAL_MS = 60_000;
const MAX_KEYS = 1024;

/** One kind of line limited to one per interval: when it was last written, and how many were not since. */
export interface LineLimit {
  at: number | undefined;
  suppressed: number;
}

export const lineLimit = (): LineLimit => ({ at: undefined, suppressed: 0 });

/** Whether a line limited by `v` is written at `now`: the count not written since, or undefined (counted in `v` instead). */
export function admitLine(v: LineLimit, now: number, intervalMs: number): number | undefined {
  if (v.at !== undefined && now - v.at < intervalMs) {
    v.suppressed++;
    return undefined;
  }
  const suppressed = v.suppressed;
  v.at = now;
  v.suppressed = 0;
  return suppressed;
}

export class WarnLimiter {
  private readonly last = new Map<string, LineLimit>();
  /** Warnings not logged since start (the metric `spook_warnings_suppressed_total`). */
  suppressed = 0;

  constructor(
    readonly intervalMs = WARN_INTERVAL_MS,
    private readonly maxKeys = MAX_KEYS,
  ) {}

  /** Undefined when the warning is suppressed; else how many were suppressed for `key` since its last one. */
  admit(now: number, key: string): number | undefined {
    if (!this.last.has(key) && this.last.size >= this.maxKeys) {
      for (const [k, v] of this.last) if (v.at !== undefined && now - v.at >= this.intervalMs) this.last.delete(k);
      if (this.last.size >= this.maxKeys) key = '(other sources)';
    }
    let e = this.last.get(key);
    if (!e) this.last.set(key, (e = lineLimit()));
    const suppressed = admitLine(e, now, this.intervalMs);
    if (suppressed === undefined) this.suppressed++;
    return suppressed;
  }
}
