import { describe, expect, it } from 'vitest';
import { runSeeds } from '../testing/sim/batch.js';
import { SIM_DEFAULTS } from '../testing/sim/run.js';

describe('pair transactions in the simulator', () => {
  it('200 seeds of txns at 30% loss with link cuts: both ends converge, nothing committed is lost', () => {
    const s = runSeeds(200, 1, { ...SIM_DEFAULTS, loss: 0.3, dup: 0.05, reorder: 0.2, cuts: true, txn: 0.4 });
    expect(s.failures).toEqual([]);
    expect(s.converged).toBe(200);
    expect(s.lostCommits).toBe(0);
    expect(s.rejected).toBeGreaterThan(50);
    expect(s.reconciles).toBeGreaterThan(5);
  });
});
