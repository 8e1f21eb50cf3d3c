import { describe, expect, it } from 'vitest';
import { SIM_DEFAULTS, type SimOptions } from '../testing/sim/run.js';
import { runSeeds } from '../testing/sim/batch.js';
import { expectSeedsClean } from './helpers.js';

/**
 * The pair simulator with configuration reloads (§6.3): a register's quota changes at one end, and
 * 0-8 s later at the other; meanwhile the ends' registers differ, writes are refused and nothing
 * is decided. At the sequencer a write often lands in the reload's turn, before the commit pass,
 * and stays undecided; its proposer is told "pending" once it is recorded (HalfPair.secureOwn,
 * PROTOCOL.md rev 1.22). With crashes and store faults, every candidate told "pending" must still
 * be decided after the restarts (a restart keeps the reloaded configuration).
 */
const run = (seeds: number, seedBase: number, o: Partial<SimOptions>) =>
  runSeeds(seeds, seedBase, { ...SIM_DEFAULTS, ...o, reloads: true });

describe('simulator: quota reloads (the ends registers differ for a while)', () => {
  it('400 seeds with cuts, crashes and store faults: all converge; sequencer writes told pending are recorded and decided', () => {
    const r = run(400, 150_000, { cuts: true, crashes: true, storeFaults: 0.02 });
    expectSeedsClean(r, 400);
    expect(r.refused).toBeGreaterThan(400); // writes refused while the registers differ
    expect(r.securedOwn).toBeGreaterThan(50);
    expect(r.crashes).toBeGreaterThan(400);
  }, 120_000);

  it('400 seeds with batches made durable late (up to 20 ms), transactions and cross-register groups', () => {
    const r = run(400, 160_000, { loss: 0.2, cuts: true, crashes: true, txn: 0.2, cross: 0.1, syncDelayMs: 20 });
    expectSeedsClean(r, 400);
    expect(r.securedOwn).toBeGreaterThan(50);
  }, 120_000);
});
