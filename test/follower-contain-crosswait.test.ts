/**
 * Containment (review of the follower path): a record held at a register's next version while it
 * waits for the parts of a cross-register txn (§4.6) was looked at again from scratch after every
 * payload the pair handled: crossGroup walked every entry and part of it (4,096 cross entries of
 * 16 parts each, a shape no honest sequencer sends) to find the same "wait". Sixteen such records
 * delivered once made every 4-octet Ack cost ~60 ms. Now a cross entry is only a record's first
 * and a part only a record's one entry, or the record is refused (`invalid-record`, §4.6, rev
 * 1.32), and the wait is remembered until the register it waits on moves (its version, what it
 * holds, a reconciliation or replacement).
 */
import { afterEach, describe, expect, it, vi } from 'vitest';
import { HalfPair } from '../core/pair/halfpair.js';
import { Follower } from '../core/pair/follower.js';
import { MapState } from '../core/register/map.js';
import { MsgType, encodeMessage, type CollapseEntry } from '../wire/messages.js';
import { DeltaOp, type Delta } from '../wire/delta.js';
import { enc, set } from './helpers.js';

const SEED = 7;
const NAMES = Array.from({ length: 16 }, (_, i) => `r${i}`);
const REGS = NAMES.map((name) => ({ name, kind: 'map' as const }));
const key = new Uint8Array([1]);
const del: Delta = { op: DeltaOp.Del, key };
const ACK = encodeMessage({ type: MsgType.Ack, largestPn: 0, ackDelayMs: 0 });

const follower = () => new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: SEED, registers: REGS }, 0);
const collapse = (register: string, version: number, entries: CollapseEntry[], hash = { hi: 0, lo: 0 }): Uint8Array =>
  encodeMessage({ type: MsgType.Collapse, register, version, hash, entries });
const crossEntry = (seq: number, anchor: string, at: number, others: string[]): CollapseEntry => ({
  origin: 1,
  seq,
  verdict: 'committed',
  delta: {
    op: DeltaOp.Cross,
    parts: [{ register: anchor, at, delta: del }, ...others.map((register) => ({ register, at: 1, delta: del }))],
  },
});
const others = (anchor: string): string[] => NAMES.filter((n) => n !== anchor);

/** Calls of the follower's crossGroup (the walk of a held record's entries and parts). */
function countCrossGroup(): { readonly calls: number } {
  const spy = vi.spyOn(Follower.prototype as unknown as { crossGroup: (...a: unknown[]) => unknown }, 'crossGroup');
  return {
    get calls() {
      return spy.mock.calls.length;
    },
  };
}
afterEach(() => vi.restoreAllMocks());

describe('follower: records waiting for a cross-register group', () => {
  it("a record of 4,096 cross entries (the review's) is refused as a violation, and nothing is held", () => {
    const f = follower();
    NAMES.forEach((anchor, k) => {
      const entries = Array.from({ length: 4096 }, (_, i) => crossEntry(i + 1, anchor, 1, others(anchor)));
      f.handlePayload(0, k, collapse(anchor, 1, entries));
    });
    expect(f.stats.drops['invalid-record']).toBe(16);
    for (const n of NAMES) expect(f.register(n).follower!.holdsNext).toBe(false);
    const t0 = performance.now();
    for (let i = 0; i < 20; i++) f.handlePayload(1, 100 + i, ACK);
    console.log(`after the refused records: ${((performance.now() - t0) / 20).toFixed(3)} ms per Ack (before: ~60 ms)`);
  });

  it('records an honest sequencer never forms are refused: a cross entry not first, a part with other entries', () => {
    const f = follower();
    f.handlePayload(0, 1, collapse('r0', 1, [{ origin: 1, seq: 1, verdict: 'committed', delta: del }, crossEntry(2, 'r0', 1, ['r1'])]));
    const part: CollapseEntry = {
      origin: 1,
      seq: 3,
      verdict: 'committed',
      delta: { op: DeltaOp.Part, anchor: 'r0', anchorVersion: 1, delta: del },
    };
    f.handlePayload(0, 2, collapse('r1', 1, [part, { origin: 1, seq: 4, verdict: 'committed', delta: del }]));
    f.handlePayload(0, 3, collapse('r2', 1, [{ origin: 1, seq: 5, verdict: 'committed', delta: del }, part]));
    expect(f.stats.drops['invalid-record']).toBe(3);
    for (const n of ['r0', 'r1', 'r2']) expect(f.register(n).follower!.holdsNext).toBe(false);
    // The honest shapes are held, waiting: a cross entry first (other entries after it), a part alone.
    f.handlePayload(0, 4, collapse('r3', 1, [crossEntry(6, 'r3', 1, ['r4']), { origin: 1, seq: 7, verdict: 'committed', delta: del }]));
    f.handlePayload(0, 5, collapse('r5', 1, [{ ...part, seq: 8, delta: { ...part.delta, anchor: 'r6' } as Delta } as CollapseEntry]));
    expect(f.stats.drops['invalid-record']).toBe(3);
    expect(f.register('r3').follower!.holdsNext).toBe(true);
    expect(f.register('r5').follower!.holdsNext).toBe(true);
  });

  it('a waiting record is not looked at again until the register it waits on moves', () => {
    const f = follower();
    // Each register's v1: a cross entry first naming the 15 others at v1 (never sent), then 4,095 entries.
    NAMES.forEach((anchor, k) => {
      const entries = [
        crossEntry(1, anchor, 1, others(anchor)),
        ...Array.from({ length: 4095 }, (_, i) => ({ origin: 1, seq: i + 2, verdict: 'committed' as const, delta: del })),
      ];
      f.handlePayload(0, k, collapse(anchor, 1, entries));
    });
    for (const n of NAMES) expect(f.register(n).follower!.holdsNext).toBe(true);
    const calls = countCrossGroup();
    for (let i = 0; i < 100; i++) f.handlePayload(1, 100 + i, ACK);
    expect(calls.calls).toBe(0); // before: 16 per Ack
    // A record held past a gap in r1 (what r1 holds changed): those waiting on r1 look again, once.
    f.handlePayload(2, 300, collapse('r1', 3, [{ origin: 1, seq: 9000, verdict: 'committed', delta: del }]));
    const once = calls.calls;
    expect(once).toBeGreaterThan(0);
    expect(once).toBeLessThanOrEqual(NAMES.length);
    for (let i = 0; i < 100; i++) f.handlePayload(3, 400 + i, ACK);
    expect(calls.calls).toBe(once);
  });

  it('the remembered wait is released when the part record comes: anchor and part apply in one step', () => {
    const f = follower();
    const a = new MapState(SEED);
    const b = new MapState(SEED);
    a.apply(set('a', '1'), 1);
    b.apply(set('b', '2'), 1);
    const anchor: CollapseEntry = {
      origin: 1,
      seq: 1,
      verdict: 'committed',
      delta: {
        op: DeltaOp.Cross,
        parts: [
          { register: 'r0', at: 1, delta: set('a', '1') },
          { register: 'r1', at: 1, delta: set('b', '2') },
        ],
      },
    };
    f.handlePayload(0, 1, collapse('r0', 1, [anchor], { hi: a.hash.hi, lo: a.hash.lo }));
    expect(f.register('r0').follower!.holdsNext).toBe(true);
    const calls = countCrossGroup();
    for (let i = 0; i < 10; i++) f.handlePayload(1, 10 + i, ACK);
    expect(calls.calls).toBe(0);
    const part: CollapseEntry = {
      origin: 1,
      seq: 1,
      verdict: 'committed',
      delta: { op: DeltaOp.Part, anchor: 'r0', anchorVersion: 1, delta: set('b', '2') },
    };
    f.handlePayload(2, 30, collapse('r1', 1, [part], { hi: b.hash.hi, lo: b.hash.lo }));
    expect(f.register('r0').version).toBe(1);
    expect(f.register('r1').version).toBe(1);
    expect((f.register('r1').state as MapState).get(enc('b'))).toBeDefined();
    expect(f.register('r0').log.get(1)).toBeDefined();
    expect(f.register('r1').log.get(1)).toBeDefined();
  });
});
