import { describe, expect, it } from 'vitest';
import { runSeeds } from '../testing/sim/batch.js';
import { runSim, SIM_DEFAULTS } from '../testing/sim/run.js';

// The deterministic simulator's checks over many seeds: convergence, no lost commit,
// no candidate both committed and rejected, every candidate decided (testing/sim/run.ts).
describe('simulation over many seeds', () => {
  it('1,000 seeds at 30% loss with duplication, reordering and link cuts all converge and lose nothing', () => {
    const s = runSeeds(1000, 1, { ...SIM_DEFAULTS, loss: 0.3, dup: 0.05, reorder: 0.2, cuts: true });
    expect(s.failures).toEqual([]);
    expect(s.converged).toBe(1000);
    expect(s.diverged).toBe(0);
    expect(s.lostCommits).toBe(0);
    // The runs must have exercised what they claim to: conflicts, cuts and the reconciliation path.
    expect(s.rejected).toBeGreaterThan(100);
    expect(s.cuts).toBeGreaterThan(1000);
    expect(s.reconciles).toBeGreaterThan(50);
  });

  it('500 seeds with in-memory corruption of the follower recover through hash-mismatch decoherence', () => {
    const s = runSeeds(500, 10_000, { ...SIM_DEFAULTS, loss: 0.1, dup: 0.02, reorder: 0.1, cuts: true, corrupt: 0.03 });
    expect(s.failures).toEqual([]);
    expect(s.converged).toBe(500);
    expect(s.lostCommits).toBe(0);
    expect(s.reconciles).toBeGreaterThan(100);
  });

  it('a seed replays exactly: same bytes, same final state', () => {
    const a = runSim({ seed: 4242, loss: 0.2, cuts: true });
    const b = runSim({ seed: 4242, loss: 0.2, cuts: true });
    expect(b).toEqual(a);
    const c = runSim({ seed: 4243, loss: 0.2, cuts: true });
    expect(c.bytesSent).not.toBe(a.bytesSent);
  });

  it('the checker catches state that departs from the committed history (it is not vacuous)', () => {
    // Corrupting the sequencer, the collapse authority, is a fault no protocol step repairs.
    const r = runSim({ seed: 7, loss: 0, corrupt: 0.5, corruptTarget: 'sequencer', ops: 20, workloadMs: 2000 });
    expect(r.lostCommits).toBeGreaterThan(0);
    expect(r.violations.some((v) => v.includes('differs from the replayed committed history'))).toBe(true);
  });

  it('150 seeds with crashes and a faulty store: restarts reload what survived, nothing acknowledged is lost', () => {
    // A crash loses all but the store; a faulty store call (durable or not) stops the endpoint as spookd stops (fail-stop).
    const s = runSeeds(150, 1, { ...SIM_DEFAULTS, crashes: true, storeFaults: 0.01 });
    expect(s.failures).toEqual([]);
    expect(s.converged).toBe(150);
    expect(s.lostCommits).toBe(0);
    expect(s.crashes).toBeGreaterThan(150);
    expect(s.storeFaults).toBeGreaterThan(150);
    expect(s.reconciles).toBeGreaterThan(10);
  });

  // Regression (issue 14, found by the crash simulation): the sequencer kept the rejections of
  // the follower's candidates (§8.5) in memory only. Restarted before the follower acknowledged
  // them, it forgot them, and a follower that then re-entangled by reconciliation reported those
  // candidates committed. The list is now durable: rebuilt from the log at replay and carried in
  // the register snapshot (SPKSNAP2).
  it('a sequencer restart keeps its §8.5 rejections (seed 562, crashes and link cuts)', () => {
    const r = runSim({ seed: 562, crashes: true, cuts: true });
    expect(r.violations).toEqual([]);
    expect(r.crashes).toBe(2);
    expect(r.reconciles).toBeGreaterThan(0);
  });

  // Seed 6000016 found the bug; since rev 1.19 (the follower's timer) its run takes another course with no store
  // fault, so 6000031 stands in: a sequencer restart, store faults and reconciliations in one run.
  it('a sequencer restart keeps its §8.5 rejections (seed 6000031, crashes and a faulty store)', () => {
    const r = runSim({ seed: 6_000_031, crashes: true, storeFaults: 0.01 });
    expect(r.violations).toEqual([]);
    expect(r.storeFaults).toBeGreaterThan(0);
    expect(r.reconciles).toBeGreaterThan(0);
  });

  it('300 seeds with crashes and link cuts: no rejected candidate is reported committed', () => {
    // Before the fix ~3% of these seeds failed (seeds 13, 36, 95, 148, 172, 259 and 300 among them).
    const s = runSeeds(300, 1, { ...SIM_DEFAULTS, crashes: true, cuts: true });
    expect(s.failures).toEqual([]);
    expect(s.converged).toBe(300);
    expect(s.lostCommits).toBe(0);
    expect(s.crashes).toBeGreaterThan(300);
    expect(s.reconciles).toBeGreaterThan(50);
  });
});
