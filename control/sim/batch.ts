/** Many seeds of runSim, summarised the way `spook sim --json` prints them. */
import { runSim, type SimOptions, type SimResult } from './run.js';

export interface SimSummary {
  seeds: number;
  seedBase: number;
  converged: number;
  diverged: number;
  lostCommits: number;
  failedSeeds: number[];
  bytesSent: number;
  datagrams: number;
  fullTransfers: number;
  reconciles: number;
  reentanglements: number;
  committed: number;
  rejected: number;
  refused: number;
  cuts: number;
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
    lostCommits: 0,
    failedSeeds: [],
    bytesSent: 0,
    datagrams: 0,
    fullTransfers: 0,
    reconciles: 0,
    reentanglements: 0,
    committed: 0,
    rejected: 0,
    refused: 0,
    cuts: 0,
    wallMs: 0,
    options: opts,
    failures: [],
  };
  for (let seed = seedBase; seed < seedBase + count; seed++) {
    const r = runSim({ ...opts, seed });
    s.seeds++;
    if (r.converged) s.converged++;
    const finals = Object.values(r.final).map((f) => JSON.stringify(f));
    if (new Set(finals).size > 1) s.diverged++;
    s.lostCommits += r.lostCommits;
    s.bytesSent += r.bytesSent;
    s.datagrams += r.datagrams;
    s.fullTransfers += r.fullTransfers;
    s.reconciles += r.reconciles;
    s.reentanglements += r.reentanglements;
    s.committed += r.committed;
    s.rejected += r.rejected;
    s.refused += r.refused;
    s.cuts += r.cuts;
    if (r.violations.length > 0) {
      s.failedSeeds.push(seed);
      if (s.failures.length < 5) s.failures.push({ seed, violations: r.violations.slice(0, 5) });
    }
    onResult?.(r);
  }
  s.wallMs = Math.round(performance.now() - t0);
  return s;
}
