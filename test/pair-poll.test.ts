import { describe, expect, it } from 'vitest';
import { HalfPair } from '../core/pair/halfpair.js';
import { runSeeds } from '../testing/sim/batch.js';
import { SIM_DEFAULTS } from '../testing/sim/run.js';

/**
 * pollTimeout computes the earliest deadline without building deadlines() (drivers ask after
 * every step): across simulated runs with loss, reordering, cuts and reconciliation, every answer
 * is the minimum of the named deadlines, so no timer is lost or fired early by the shortcut.
 */
describe('pair poll paths', () => {
  it('pollTimeout is the earliest of deadlines() at every call over 60 seeds with loss and cuts', () => {
    const fast = HalfPair.prototype.pollTimeout;
    let calls = 0;
    const wrong: string[] = [];
    HalfPair.prototype.pollTimeout = function (this: HalfPair): number | undefined {
      const t = fast.call(this);
      const ds = this.deadlines();
      const want = ds.length === 0 ? undefined : Math.min(...ds.map((d) => d.at));
      calls++;
      if (t !== want && wrong.length < 5) wrong.push(`${t} instead of ${want} (${JSON.stringify(ds)})`);
      return t;
    };
    try {
      const s = runSeeds(60, 7_000, { ...SIM_DEFAULTS, loss: 0.2, dup: 0.05, reorder: 0.2, cuts: true });
      expect(s.failures).toEqual([]);
      expect(s.converged).toBe(60);
    } finally {
      HalfPair.prototype.pollTimeout = fast;
    }
    expect(wrong).toEqual([]);
    expect(calls).toBeGreaterThan(10_000);
  });
});
