/**
 * CPU per committed write on a pair that declares many registers, writes going to one of them
 * (issue 16): two HalfPairs over the seeded simulator (no loss, 1 ms links), the follower
 * proposing sets on register r0 ten per simulated ms; printed for one register (the baseline,
 * same run) and for `registers`. A pair's step visited every register it declares (its datagram's
 * fill, its deadlines, its collapse), so the cost grew with the registers declared, not with the
 * ones written; it now visits only those that may have work (core/pair/active.ts).
 *
 *   node dist/bench/pair-registers.js [registers=1000] [writes=20000]
 */
import { HalfPair, type RegisterSpec } from '../core/pair/halfpair.js';
import { PairState } from '../core/pair/lifecycle.js';
import { DeltaOp } from '../wire/delta.js';
import { SimWorld } from '../testing/sim/world.js';
import { printRegistersRatio } from './registers-ratio.js';

/** CPU µs per write for a pair of `n` registers, `writes` sets on r0. */
function cpuPerWrite(n: number, writes: number): number {
  const registers: RegisterSpec[] = Array.from({ length: n }, (_, i) => ({ name: `r${i}`, kind: 'map' }));
  const world = new SimWorld(1, { loss: 0, dup: 0, reorder: 0, minDelayMs: 1, maxDelayMs: 1 });
  const a = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 5, registers }, 0);
  const b = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 5, registers }, 0);
  world.verify = false; // the simulator's checks visit every register at every step: not what is measured
  world.adopt(['A', 'B'], [a, b]);
  if (!world.run(10_000, () => a.state === PairState.ENTANGLED && b.state === PairState.ENTANGLED))
    throw new Error('bench: the pair did not form');
  const enc = new TextEncoder();
  for (let i = 0; i < writes; i++)
    world.at(world.now + 1 + Math.floor(i / 10), () => {
      b.propose(world.now, 'r0', { op: DeltaOp.Set, key: enc.encode(`k${i % 1000}`), value: enc.encode(`v${i}`) });
    });
  const c0 = process.cpuUsage();
  const done = world.run(world.now + writes / 10 + 60_000, () => a.register('r0').version >= writes && b.register('r0').version >= writes);
  const c = process.cpuUsage(c0);
  if (!done) throw new Error(`bench: ${writes} writes not committed with ${n} registers`);
  return (c.user + c.system) / writes;
}

printRegistersRatio(cpuPerWrite);
