import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import { REPLAY_WINDOW, ReplayWindow } from '../core/etcp/replay.js';

// The replay window accepts each packet number once, rejects anything older than the window.
describe('ReplayWindow', () => {
  it('accepts new numbers once, in any order inside the window', () => {
    const w = new ReplayWindow();
    for (const n of [0, 5, 3, 4, 1, 2]) expect(w.commit(n)).toBe(true);
    for (const n of [0, 1, 2, 3, 4, 5]) expect(w.commit(n)).toBe(false);
    expect(w.check(6)).toBe(true);
  });

  it('rejects numbers that fell out of the window, keeps the ones still inside', () => {
    const w = new ReplayWindow();
    w.commit(10);
    w.commit(10 + REPLAY_WINDOW);
    // The window holds the REPLAY_WINDOW numbers below the top: top - REPLAY_WINDOW is out.
    expect(w.check(10)).toBe(false); // seen, and now out of the window
    expect(w.check(9)).toBe(false); // never seen, but too old
    expect(w.check(11)).toBe(true); // the oldest number still inside, unseen
    expect(w.check(REPLAY_WINDOW + 9)).toBe(true);
  });

  it('a large jump clears stale bits', () => {
    const w = new ReplayWindow();
    for (let n = 0; n < 100; n++) w.commit(n);
    w.commit(1_000_000);
    expect(w.check(1_000_000 - 5)).toBe(true);
    expect(w.commit(1_000_000 - 5)).toBe(true);
    expect(w.commit(1_000_000 - 5)).toBe(false);
  });

  it('refuses negative and unsafe numbers', () => {
    const w = new ReplayWindow();
    expect(w.check(-1)).toBe(false);
    expect(w.check(2 ** 53)).toBe(false);
  });

  it('agrees with a reference set model on random sequences', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 6000 }), { maxLength: 400 }), (ns) => {
        const w = new ReplayWindow();
        const seen = new Set<number>();
        let top = -1;
        for (const n of ns) {
          const expected = !seen.has(n) && (n > top || n + REPLAY_WINDOW > top);
          expect(w.commit(n)).toBe(expected);
          if (expected) {
            seen.add(n);
            top = Math.max(top, n);
          }
        }
      }),
      { numRuns: 300 },
    );
  });
});
