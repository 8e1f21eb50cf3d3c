/**
 * Review 39 (exceptions and containment), store replay: a cross-register candidate is bounded
 * by MAX_DELTA_LEN as a *candidate* (every part's `at` is 0, one octet), but the sequencer fills
 * in each part's `at` (the version it commits at) before it logs the record, and the record's
 * decoder bounds the entry by the same MAX_DELTA_LEN. A peer (the follower) that proposes a
 * cross txn of exactly MAX_DELTA_LEN octets once the anchor register is past version 127 (a
 * 2-octet varint) gets it committed and logged by the sequencer in a form no decoder accepts:
 * the follower drops the record (malformed-payload, a violation charged to the honest
 * sequencer) and the sequencer's own next start throws while replaying its log (StoreError):
 * spookd does not start.
 */
import { describe, expect, it } from 'vitest';
import { existsSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { HalfPair } from '../core/pair/halfpair.js';
import { DiskStore } from '../drivers/store/store.js';
import { MsgType, decodeMessages, encodeMessage } from '../wire/messages.js';
import { DeltaOp } from '../wire/delta.js';
import { MAX_DELTA_LEN } from '../wire/constants.js';
import { encodedEntryDeltaLen, type CrossDelta } from '../wire/cross.js';
import { enc, tempDirs } from './helpers.js';

const tmp = tempDirs('store-cross-txn-log-limit');
const MiB = 1 << 20;
// Large values (OPERATIONS.md, "Large values"): the largest a register may declare, MAX_VALUE_LEN.
const QUOTA = { maxValueBytes: 64 * MiB };
const REGS = [
  // The log bound spookd gives every register (drivers/daemon/spookd.ts addLink).
  { name: 'a', kind: 'map' as const, quota: QUOTA, log: { maxRecords: 65_536, maxBytes: 256 * MiB } },
  { name: 'b', kind: 'map' as const, quota: QUOTA, log: { maxRecords: 65_536, maxBytes: 256 * MiB } },
];

function open(dir: string) {
  const store = new DiskStore(dir, 'always');
  // Snapshots written at once rather than in slices of the event loop (this test runs no loop): the same file.
  store.backgroundSnapshotBytes = Infinity;
  const pair = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 11, registers: REGS, writes: 'driver' }, 0);
  for (const r of pair.registers.values()) store.load(r);
  return { store, pair };
}

describe('a cross txn the sequencer logs beyond what its decoder reads', () => {
  it('a peer proposal of exactly MAX_DELTA_LEN octets, committed at anchor version >= 128, leaves a log the next start can load', () => {
    const dir = tmp();
    const s = open(dir);
    let pn = 0;
    let now = 1;
    const step = (payload: Uint8Array): void => {
      s.pair.handlePayload(now, pn++, payload);
      s.pair.collapse(now);
      s.store.persist(s.pair.pollWrites());
      s.pair.writesDurable();
      while (s.pair.pollEvent() !== undefined);
      while (s.pair.pollTransmit(now) !== undefined);
      now++;
    };
    // The follower (origin 2) writes two large values on `a` (the log outgrows 64 MiB: `a` is
    // snapshotted, 120 MiB, and a log is snapshotted again only once it outgrows that), then 128
    // small sets: an ordinary pair's history.
    for (let seq = 1; seq <= 130; seq++) {
      const value = seq <= 2 ? new Uint8Array(60 * MiB).fill(seq) : enc('v');
      step(
        encodeMessage({
          type: MsgType.Propose,
          register: 'a',
          base: seq,
          candidates: [{ origin: 2, seq, delta: { op: DeltaOp.Set, key: enc(`k${seq}`), value } }],
        }),
      );
    }
    expect(s.pair.register('a').version).toBe(130);
    expect(existsSync(join(dir, 'a', 'snapshot'))).toBe(true);
    // A cross txn on a and b of exactly MAX_DELTA_LEN octets as a candidate (each `at` is 0): its
    // values 64 MiB in all (the anchor's maxValueBytes), its keys making up the rest.
    const half = 32 * MiB;
    const mk = (klen: number): CrossDelta => ({
      op: DeltaOp.Cross,
      parts: [
        { register: 'a', at: 0, delta: { op: DeltaOp.Set, key: new Uint8Array(klen).fill(120), value: new Uint8Array(half).fill(1) } },
        { register: 'b', at: 0, delta: { op: DeltaOp.Set, key: new Uint8Array(4096).fill(121), value: new Uint8Array(half).fill(2) } },
      ],
    });
    let klen = 1;
    while (encodedEntryDeltaLen(mk(klen)) < MAX_DELTA_LEN) klen++;
    const cross = mk(klen);
    expect(encodedEntryDeltaLen(cross)).toBe(MAX_DELTA_LEN);
    const propose = encodeMessage({ type: MsgType.Propose, register: 'a', base: 131, candidates: [{ origin: 2, seq: 131, delta: cross }] });
    // Within what the wire takes: it decodes as a candidate.
    expect(() => decodeMessages(propose)).not.toThrow();
    step(propose);
    const a = s.pair.register('a');
    expect(a.version).toBe(131); // committed
    // What the follower is sent (and what the sequencer logged): does it decode?
    const rec = a.log.get(131)!.encoded;
    let recordFault: string | undefined;
    try {
      decodeMessages(rec);
    } catch (e) {
      recordFault = (e as Error).message;
    }
    s.store.close();
    // The record is in the log, not in a snapshot: any restart from now on replays it.
    expect(existsSync(join(dir, 'a', 'log.old'))).toBe(false);
    expect(statSync(join(dir, 'a', 'log')).size).toBeGreaterThan(MAX_DELTA_LEN);
    // The sequencer restarts from its own disk.
    let startFault: string | undefined;
    try {
      const t = open(dir);
      t.store.close();
    } catch (e) {
      startFault = (e as Error).message;
    }
    expect({ recordFault, startFault }).toEqual({ recordFault: undefined, startFault: undefined });
  }, 120_000);
});
