import { describe, expect, it } from 'vitest';
import { BudgetPool, WorkBudget, SourceBudgets } from '../core/etcp/budget.js';

describe('per-peer work budgets (PROTOCOL.md §12.9)', () => {
  it('without a pool, a budget is a hard cap: over it, work is refused until the refill', () => {
    const b = new WorkBudget(100, 0);
    b.charge(150);
    expect(b.admit(0)).toBe(false);
    expect(b.waitMs(0)).toBe(501);
    expect(b.admit(400)).toBe(false);
    expect(b.admit(600)).toBe(true);
    expect(b.refused).toBe(2);
  });

  it('a lone busy peer is not held back (work-conserving), and its debt is forgiven', () => {
    let now = 0;
    const pool = new BudgetPool(() => now);
    const bulk = pool.add(100);
    pool.add(100); // an idle peer: keepalives at most
    for (; now < 10_000; now += 10) {
      expect(bulk.admit(now)).toBe(true);
      bulk.charge(8); // 80% of a core, far over 100 ms/s
    }
    expect(bulk.refused).toBe(0);
    expect(bulk.waitMs(now)).toBe(0);
  });

  it('attack: a light peer (60 cheap frames a second) is enough to hold a flooding one to its budget', () => {
    let now = 0;
    const pool = new BudgetPool(() => now);
    const flood = pool.add(100);
    const light = pool.add(100);
    let floodWork = 0;
    for (; now < 3_000; now += 1) {
      if (now % 16 === 0 && light.admit(now)) light.charge(0.03);
      if (flood.admit(now)) {
        flood.charge(0.9);
        if (now >= 1_000) floodWork += 0.9; // after the light peer's demand has built up (~0.4 s)
      }
    }
    // Over the last 2 s: about its 100 ms a second, not 900.
    expect(floodWork).toBeLessThan(2 * 100 + 10);
    expect(light.refused).toBe(0);
  });

  it('attack: once another peer is busy, the one over its budget is held to its rate at once, and released when the other goes quiet', () => {
    let now = 0;
    const pool = new BudgetPool(() => now);
    const flood = pool.add(100);
    const victim = pool.add(100);
    // The flood runs alone for 5 s at 80% of a core: no debt builds up.
    for (; now < 5_000; now += 10) flood.charge(8);
    // The victim starts working: 5 ms every 100 ms.
    victim.charge(5);
    let floodWork = 0;
    const start = now;
    for (; now < start + 2_000; now += 10) {
      if (now % 100 === 0) {
        expect(victim.admit(now)).toBe(true);
        victim.charge(5);
      }
      if (flood.admit(now)) {
        flood.charge(8);
        floodWork += 8;
      }
    }
    // Held to about its 100 ms/s (plus one charge in flight), not to a debt of seconds.
    expect(floodWork).toBeGreaterThan(150);
    expect(floodWork).toBeLessThanOrEqual(2 * 100 + 8);
    expect(flood.refused).toBeGreaterThan(0);
    // The victim goes quiet: a few seconds later the flood runs freely again.
    now += 5_000;
    expect(flood.admit(now)).toBe(true);
    flood.charge(500);
    expect(flood.admit(now)).toBe(true);
  });
});

describe('per-source budgets for frames that fail to open (PROTOCOL.md §12.9)', () => {
  it('a source in debt is refused until the refill; other sources and unknown ones are not; the table is bounded', () => {
    const s = new SourceBudgets(20, 2);
    expect(s.admit(0, 'x')).toBe(true); // never charged: nothing owed
    for (let i = 0; i < 25; i++) s.charge(0, 'x', 1); // 25 ms of failed opens against 20 ms a second
    expect(s.admit(0, 'x')).toBe(false);
    expect(s.admit(0, 'y')).toBe(true);
    expect(s.admit(100, 'x')).toBe(false); // 2 ms refilled of the 5 owed
    expect(s.admit(300, 'x')).toBe(true);
    s.charge(300, 'y', 1);
    s.charge(300, 'z', 50); // beyond the table's 2 sources: not charged, so not held
    expect(s.size).toBe(2);
    expect(s.admit(300, 'z')).toBe(true);
  });
});
