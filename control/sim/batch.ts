/** Many seeds of runSim, summarised the way `spook sim --json` prints them. */
import { runSim, type SimOptions, type SimResult } from './run.js';

/** The per-seed counts a summary adds up. */
const SUMMED = ['lostCommits', 'bytesSent', 'datagrams', 'fullTransfers', 'reconciles', 'reentanglements', 'committed', 'rejected', 'refused', 'cuts'] as const;
type Summed = Pick<SimResult, (typeof SUMMED)[number]>;

export interface SimSummary extends Summed {
  seeds: number;
  seedBase: number;
  converged: number;
  diverged: number;
  failedSeeds: number[];
  wallMs: number;
  options: Omit<SimOptions, 'seed' | 'trace'>;
  /** The first violations of the first failed seeds, to start debugging from. */
  failures: { seed: number; violations: string[] }[];
}

export function runSeeds(count: number, seedBase: number, opts: Omit<SimOptions, 'seed' | 'trace'>, onResult?: (r: SimResult) => void): SimSummary {
  const t0 = performance.now();
  const s: SimSummary = {
    seeds: 0,
    seedBase,
    converged: 0,
    diverged: 0,
    failedSeeds: [],
    wallMs: 0,
    options: opts,
    failures: [],
    ...(Object.fromEntries(SUMMED.map((k) => [k, 0])) as unknown as Summed),
  };
  for (let seed = seedBase; seed < seedBase + count; seed++) {
    const r = runSim({ ...opts, seed });
    s.seeds++;
    if (r.converged) s.converged++;
    const finals = Object.values(r.final).map((f) => JSON.stringify(f));
    if (new Set(finals).size > 1) s.diverged++;
    for (const k of SUMMED) s[k] += r[k];
    if (r.violations.length > 0) {
      s.failedSeeds.push(seed);
      if (s.failures.length < 5) s.failures.push({ seed, violations: r.violations.slice(0, 5) });
    }
    onResult?.(r);
  }
  s.wallMs = Math.round(performance.now() - t0);
  return s;
}
