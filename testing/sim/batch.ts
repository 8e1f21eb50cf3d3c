/** Many seeds of runSim, summarised the way `spook-lab sim --json` prints them. */
import { runSim, type SimOptions, type SimResult } from './run.js';

/** The per-seed counts a summary adds up. */
const SUMMED = [
  'lostCommits',
  'bytesSent',
  'datagrams',
  'fullTransfers',
  'reconciles',
  'reentanglements',
  'committed',
  'rejected',
  'refused',
  'cuts',
  'crashes',
  'storeFaults',
  'securedOwn',
] as const;
type Summed = Pick<SimResult, (typeof SUMMED)[number]>;

export interface SimSummary extends Summed, SeedTally {
  seedBase: number;
  diverged: number;
  options: Omit<SimOptions, 'seed' | 'trace'>;
}

/** What every seed batch reports, whatever it simulates. */
export interface SeedTally {
  seeds: number;
  converged: number;
  failedSeeds: number[];
  /** The first violations of the first failed seeds, to start debugging from. */
  failures: { seed: number; violations: string[] }[];
  wallMs: number;
}

/**
 * Run `count` seeds from `seedBase`, summing `summed` fields of each result into `into`
 * and keeping the tally of convergence and failures; `each` sees every result.
 */
export function tallySeeds<K extends string, R extends { converged: boolean; violations: string[] } & Record<K, number>>(
  count: number,
  seedBase: number,
  run: (seed: number) => R,
  summed: readonly K[],
  into: SeedTally & Record<K, number>,
  each?: (r: R) => void,
): void {
  const t0 = performance.now();
  for (let seed = seedBase; seed < seedBase + count; seed++) {
    const r = run(seed);
    into.seeds++;
    if (r.converged) into.converged++;
    for (const k of summed) (into as Record<K, number>)[k] += r[k];
    if (r.violations.length > 0) {
      into.failedSeeds.push(seed);
      if (into.failures.length < 5) into.failures.push({ seed, violations: r.violations.slice(0, 5) });
    }
    each?.(r);
  }
  into.wallMs = Math.round(performance.now() - t0);
}

/** A fresh tally with every summed field at 0. */
export function emptyTally<K extends string>(summed: readonly K[]): SeedTally & Record<K, number> {
  return {
    seeds: 0,
    converged: 0,
    failedSeeds: [],
    failures: [],
    wallMs: 0,
    ...(Object.fromEntries(summed.map((k) => [k, 0])) as Record<K, number>),
  };
}

export function runSeeds(
  count: number,
  seedBase: number,
  opts: Omit<SimOptions, 'seed' | 'trace'>,
  onResult?: (r: SimResult) => void,
): SimSummary {
  const s: SimSummary = { ...emptyTally(SUMMED), seedBase, diverged: 0, options: opts };
  tallySeeds(
    count,
    seedBase,
    (seed) => runSim({ ...opts, seed }),
    SUMMED,
    s,
    (r) => {
      if (new Set(Object.values(r.final).map((f) => JSON.stringify(f))).size > 1) s.diverged++;
      onResult?.(r);
    },
  );
  return s;
}
