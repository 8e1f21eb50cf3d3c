/**
 * What the benches that compare Spook with a reference system share: a load of `total` calls
 * with `inflight` awaiting at once, each timed, bounded in time; its percentiles and rate; and
 * the teardown of what a bench started when it is interrupted.
 */

export interface Load {
  latencies: Float64Array;
  acked: number;
  /** performance.now() of the first call and of the last acknowledgement. */
  t0: number;
  lastAck: number;
}

/** `total` calls of `one`, `inflight` awaiting at once; past `limitMs` the load fails (`what` names it). */
export async function drive(
  what: string,
  total: number,
  inflight: number,
  limitMs: number,
  one: (i: number) => Promise<boolean>,
): Promise<Load> {
  const latencies = new Float64Array(total);
  let next = 0;
  let acked = 0;
  let lastAck = 0;
  const t0 = performance.now();
  const end = t0 + limitMs;
  await Promise.all(
    Array.from({ length: Math.min(inflight, total) }, async () => {
      while (next < total) {
        if (performance.now() > end) throw new Error(`${what}: ${next} of ${total} calls issued after ${limitMs} ms (--limit-ms)`);
        const i = next++;
        const s = performance.now();
        const ok = await one(i);
        lastAck = performance.now();
        latencies[i] = lastAck - s;
        if (ok) acked++;
      }
    }),
  );
  return { latencies, acked, t0, lastAck };
}

export const perSec = (n: number, ms: number): number => (ms > 0 ? Math.round(n / (ms / 1000)) : 0);

/** Acknowledged calls per second and the p50/p99 latency (ms) of a load. */
export function loadFigures(load: Load): { perSec: number; p50Ms: number; p99Ms: number } {
  const sorted = load.latencies.slice().sort();
  const pct = (p: number): number => Number(sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))].toFixed(2));
  return { perSec: perSec(load.acked, load.lastAck - load.t0), p50Ms: pct(0.5), p99Ms: pct(0.99) };
}

/**
 * Ctrl-C or a kill must not leave processes behind: `fn` runs (synchronously) on SIGINT/SIGTERM,
 * then the process exits. Returns the function that unregisters it.
 */
export function onSignal(fn: () => void): () => void {
  const h = (sig: NodeJS.Signals): void => {
    fn();
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', h);
  process.once('SIGTERM', h);
  return () => {
    process.off('SIGINT', h);
    process.off('SIGTERM', h);
  };
}
