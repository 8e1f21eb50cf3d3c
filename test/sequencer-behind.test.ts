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
import { enc, entangleWithSets, set, statusVersion, tempDirs } from './helpers.js';

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

  it('a stale Status of an honest sequencer, late and duplicated, is not taken for one: no re-entanglement (the review of rev 1.27)', () => {
    const t = { now: 0 };
    const a = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 7, registers: REGS }, 0);
    const b = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 7, registers: REGS }, 0);
    let keep: ((d: Uint8Array, v: number) => boolean) | undefined;
    const step = (): void => {
      for (const p of [a, b]) if ((p.pollTimeout() ?? Infinity) <= t.now) p.handleTimeout(t.now);
      for (let moved = true; moved;) {
        moved = false;
        for (let d = a.pollTransmit(t.now); d; d = a.pollTransmit(t.now), moved = true) {
          const v = statusVersion(d);
          if (v !== undefined && keep?.(d, v)) continue;
          b.handleDatagram(t.now, d);
        }
        for (let d = b.pollTransmit(t.now); d; d = b.pollTransmit(t.now), moved = true) a.handleDatagram(t.now, d);
      }
      t.now++;
    };
    entangleWithSets(a, b, step, () => t.now);
    // Idle at v3: A's next keepalive Status (v3) is delayed in the network (and duplicated).
    let late: Uint8Array | undefined;
    keep = (d, v) => (v === 3 && late === undefined ? ((late = d), true) : false);
    for (let n = 0; n < 3000 && late === undefined; n++) step();
    expect(late).toBeDefined();
    keep = undefined;
    // A commits v4 (B's own write): the collapse reaches B before the delayed Status.
    b.propose(t.now, 'kv', set('mine', 'v'));
    for (let n = 0; n < 30; n++) step();
    expect([a.register('kv').version, b.register('kv').version]).toEqual([4, 4]);
    const outcomes: string[] = [];
    for (let e = b.pollEvent(); e; e = b.pollEvent()) if (e.type === 'outcome') outcomes.push(JSON.stringify(e));
    const before = [a.stats.reentanglements, b.stats.reentanglements];
    // Copy 1 of the delayed datagram, copy 2 one RTO later (no Status from A meanwhile), copy 3
    // 2.5 s after that (two keepalives: A's own Statuses at v4 came between).
    b.handleDatagram(t.now, late!);
    const rto = (b as unknown as { rto(): number }).rto();
    for (let n = 0; n <= rto; n++) step();
    b.handleDatagram(t.now, late!);
    for (let n = 0; n < 2500; n++) step();
    b.handleDatagram(t.now, late!);
    const causes: string[] = [];
    for (let n = 0; n < 3000; n++) {
      step();
      for (let e = b.pollEvent(); e; e = b.pollEvent()) if (e.type === 'lifecycle') causes.push(`${e.cause}`);
    }
    expect(causes).toEqual([]);
    expect([a.stats.reentanglements, b.stats.reentanglements]).toEqual(before);
    expect([a.state, b.state, b.register('kv').version]).toEqual([PairState.ENTANGLED, PairState.ENTANGLED, 4]);
  });
});
