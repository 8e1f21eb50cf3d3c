import { describe, expect, it } from 'vitest';
import { HalfPair, type RegisterSpec } from '../core/pair/halfpair.js';
import { PairState } from '../core/pair/lifecycle.js';
import { runSim, SIM_DEFAULTS, type SimOptions } from '../testing/sim/run.js';
import { SimWorld } from '../testing/sim/world.js';
import { DeltaOp } from '../wire/delta.js';

/**
 * The pair's active set (core/pair/active.ts): its steps visit only the registers that may have
 * work. It must change nothing a pair does, only what it costs: the seeded simulator runs each
 * seed twice, once visiting every register at every step (`visitEvery`, the behaviour before the
 * set) and once with the set, and both runs must send the same datagrams at the same times and
 * release the same events (SimWorld.digest). Every simulated step also audits the set
 * (HalfPair.audit: a register outside it that has work was changed without a wake).
 */
describe('the pair active set', () => {
  it('changes nothing: 240 seeds with loss, cuts, crashes, store faults, reloads, corruption and cross-register txns send and report the same with and without it', () => {
    const differ: string[] = [];
    const violations: string[] = [];
    let reentanglements = 0;
    for (let seed = 1; seed <= 240; seed++) {
      const m = seed % 6;
      const o: SimOptions = {
        ...SIM_DEFAULTS,
        seed,
        loss: 0.3,
        dup: 0.05,
        reorder: 0.2,
        cuts: true,
        extraRegisters: [1, 3, 8][seed % 3],
        crashes: m === 1,
        storeFaults: m === 2 ? 0.02 : 0,
        syncDelayMs: m === 3 ? 8 : 0,
        reloads: m === 4,
        corrupt: m === 5 ? 0.05 : 0,
        cross: seed % 4 === 0 ? 0.2 : 0,
        txn: seed % 4 === 1 ? 0.2 : 0,
        logRecords: [8, 32, 4096][seed % 3],
      };
      const every = runSim({ ...o, visitEvery: true });
      const active = runSim(o);
      if (JSON.stringify(active) !== JSON.stringify(every)) differ.push(`seed ${seed}: digest ${active.digest} vs ${every.digest}`);
      violations.push(...active.violations.map((v) => `seed ${seed}: ${v}`));
      reentanglements += active.reentanglements;
    }
    expect(differ).toEqual([]);
    expect(violations).toEqual([]);
    expect(reentanglements).toBeGreaterThan(240); // the runs went through cuts and re-entanglement
  });

  it('a pair of 1,000 registers written on one keeps about one active; idle, none, and its keepalives still carry every Status', () => {
    const registers: RegisterSpec[] = Array.from({ length: 1000 }, (_, i) => ({ name: `r${i}`, kind: 'map' }));
    const world = new SimWorld(3, { loss: 0, dup: 0, reorder: 0, minDelayMs: 1, maxDelayMs: 1 });
    const a = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 5, registers }, 0);
    const b = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 5, registers }, 0);
    world.adopt(['A', 'B'], [a, b]);
    expect(world.run(10_000, () => a.state === PairState.ENTANGLED && b.state === PairState.ENTANGLED)).toBe(true);
    const enc = new TextEncoder();
    const start = world.now + 10;
    for (let i = 0; i < 3000; i++)
      world.at(start + i, () => {
        b.propose(world.now, 'r0', { op: DeltaOp.Set, key: enc.encode(`k${i % 100}`), value: enc.encode(`v${i}`) });
      });
    const samples: number[] = [];
    world.run(
      start + 3500,
      () => {
        samples.push(a.activeRegisters, b.activeRegisters);
        return false;
      },
      1,
    );
    expect(a.register('r0').version).toBe(3000);
    expect(b.register('r0').version).toBe(3000);
    samples.sort((x, y) => x - y);
    expect(samples[Math.floor(samples.length / 2)]).toBeLessThanOrEqual(1); // the median, between steps
    // The keepalive still sends every register's Status (§9.4): about 1,000 a second from each end, idle.
    const before = a.stats.bytesSent;
    world.run(world.now + 2000);
    expect(a.stats.bytesSent - before).toBeGreaterThan(2 * 1000 * 15); // a Status here is 19 octets
    expect(a.activeRegisters + b.activeRegisters).toBe(0);
  });
});
