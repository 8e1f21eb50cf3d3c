/**
 * A sequencer that comes back behind its follower (PROTOCOL.md open question 2, rev 1.27): its
 * data directory restored from an older copy, or its last records lost under fsync `everysec`.
 * Its Statuses are below what the follower saw announced, within the send window, so the
 * follower took each for a reordered one and ignored it: with nothing more written, the pair
 * never re-entangled. A lower Status that the next one confirms, one RTO or more later, is the
 * sequencer's word: the follower reconciles to it (losing what only it held, which the restore or
 * the fsync policy already lost).
 */
import { cpSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { HalfPair } from '../core/pair/halfpair.js';
import { PairState } from '../core/pair/lifecycle.js';
import type { RegisterSpec } from '../core/pair/types.js';
import type { MapState } from '../core/register/map.js';
import { DiskStore } from '../drivers/store/store.js';
import { enc, set, tempDirs } from './helpers.js';

const REGS: RegisterSpec[] = [{ name: 'kv', kind: 'map' }];
const tmp = tempDirs('spook-behind');

/** Sequencer A over a DiskStore in `dir` (as spookd starts it), follower B in memory. */
function sequencer(dir: string, now: number): { pair: HalfPair; store: DiskStore } {
  const store = new DiskStore(dir, 'always');
  const pair = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 77, registers: REGS, writes: 'driver' }, now);
  for (const r of pair.registers.values()) store.load(r);
  return { pair, store };
}

describe('a sequencer restored behind its follower', () => {
  it('is followed back once its lower Status is confirmed: the pair re-entangles with nothing more written', () => {
    const dir = tmp();
    let now = 0;
    let a = sequencer(dir, now);
    const b = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 77, registers: REGS }, now);
    const step = (): void => {
      for (const p of [a.pair, b]) if ((p.pollTimeout() ?? Infinity) <= now) p.handleTimeout(now);
      for (let moved = true; moved;) {
        moved = false;
        const w = a.pair.pollWrites();
        if (w.length > 0) {
          a.store.persist(w);
          a.pair.writesDurable();
        }
        for (let d = a.pair.pollTransmit(now); d; d = a.pair.pollTransmit(now), moved = true) b.handleDatagram(now, d);
        for (let d = b.pollTransmit(now); d; d = b.pollTransmit(now), moved = true) a.pair.handleDatagram(now, d);
      }
      now++;
    };
    const aligned = (): boolean => {
      const [x, y] = [a.pair.register('kv'), b.register('kv')];
      return (
        a.pair.state === PairState.ENTANGLED &&
        b.state === PairState.ENTANGLED &&
        x.version === y.version &&
        x.hash.hi === y.hash.hi &&
        x.hash.lo === y.hash.lo
      );
    };
    const run = (ms: number): boolean => {
      for (const end = now + ms; now < end;) {
        step();
        if (aligned()) return true;
      }
      return false;
    };
    expect(run(10_000)).toBe(true);
    for (let i = 0; i < 10; i++) {
      a.pair.propose(now, 'kv', set(`k${i}`, 'v'));
      for (let t = 0; t < 20; t++) step();
    }
    expect(run(10_000)).toBe(true);
    const backup = tmp();
    cpSync(dir, backup, { recursive: true }); // kv at v10
    const old = a.pair.register('kv').version;
    for (let i = 10; i < 20; i++) {
      a.pair.propose(now, 'kv', set(`k${i}`, 'v'));
      for (let t = 0; t < 20; t++) step();
    }
    expect(run(10_000)).toBe(true);
    expect(b.register('kv').version).toBeGreaterThan(old);
    // A's host is restored from the older copy: A comes back at v10, B (its peer) sees a new session.
    a.store.close();
    a = sequencer(backup, now);
    b.resetPacketSpace();
    expect(a.pair.register('kv').version).toBe(old);
    expect(run(30_000)).toBe(true);
    expect(b.register('kv').version).toBe(old);
    expect((b.register('kv').state as MapState).get(enc('k15'))).toBeUndefined();
  });
});
