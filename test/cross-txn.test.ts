/**
 * Cross-register transactions of a pair (issue 15, PROTOCOL.md §4.6): one candidate over several
 * registers, decided whole by the sequencer and applied whole at the follower, at every step,
 * under loss and reordering, across cuts (log path and reconciliation) and restarts.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Reader } from '../wire/buffer.js';
import { DeltaOp, type Delta, type SimpleDelta } from '../wire/delta.js';
import {
  decodeEntryDelta,
  encodeEntryDelta,
  encodedEntryDeltaLen,
  readEntryDelta,
  type CrossDelta,
  type EntryDelta,
} from '../wire/cross.js';
import { MsgType, encodeMessage } from '../wire/messages.js';
import { MAX_PAIR_RECORD, decodePendingRecord, encodePendingRecord, frameRecord, readFrames } from '../wire/journal.js';
import { hash } from '../crypto/primitives.js';
import { HalfPair } from '../core/pair/halfpair.js';
import { ProposeError } from '../core/pair/replica.js';
import type { OwnCandidate, RegisterSpec } from '../core/pair/types.js';
import { MapState } from '../core/register/map.js';
import type { StreamState } from '../core/register/stream.js';
import { DiskStore } from '../drivers/store/store.js';
import { runSeeds } from '../testing/sim/batch.js';
import { SIM_DEFAULTS } from '../testing/sim/run.js';
import { type Harness, append, cas, cross, del, enc, harness, proposeNow, set, expectSeedsClean, wireFault } from './helpers.js';

const REGS: RegisterSpec[] = [
  { name: 'kv', kind: 'map' },
  { name: 'kv2', kind: 'map' },
  { name: 's', kind: 'stream' },
];
const sha256 = (...parts: Uint8Array[]): Uint8Array => hash('SHA256', ...parts);
const txn = (...ops: Delta[]): Delta => ({ op: DeltaOp.Txn, ops: ops as SimpleDelta[] });
const text = (b: Uint8Array | undefined): string | undefined => (b ? new TextDecoder().decode(b) : undefined);
const mapOf = (h: Harness, side: 'a' | 'b', r: string): MapState => h[side].pair.register(r).state as MapState;
const outcomeOf = (h: Harness, id: { origin: number; seq: number }) =>
  h.events.map((e) => e.ev).find((ev) => ev.type === 'outcome' && ev.origin === id.origin && ev.seq === id.seq);
const ends = (h: Harness, r: string): unknown[] =>
  [h.a, h.b].map((ep) => {
    const x = ep.pair.register(r);
    return [x.version, x.hash.hi, x.hash.lo];
  });

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('encoding (§4.6)', () => {
  it('op 6 round-trips canonically with `at` 0 in a candidate and set in a record; op 7 only in a record', () => {
    const d = cross(['kv', set('a', '1')], ['kv2', txn(del('b'), cas('c', 2, 'x'))]);
    const b = encodeEntryDelta(d);
    expect(b.length).toBe(encodedEntryDeltaLen(d));
    expect([...b.subarray(0, 6)]).toEqual([6, 2, 2, 0x6b, 0x76, 0]); // op, 2 parts, "kv", at 0
    expect(encodeEntryDelta(decodeEntryDelta(b, 'candidate'))).toEqual(b);
    expect(wireFault(() => decodeEntryDelta(b, 'record')).field).toBe('delta.parts[0].at');
    const rec: CrossDelta = { ...d, parts: d.parts.map((p, i) => ({ ...p, at: 7 + i })) };
    expect(decodeEntryDelta(encodeEntryDelta(rec), 'record')).toMatchObject({ parts: [{ at: 7 }, { at: 8 }] });
    expect(wireFault(() => decodeEntryDelta(encodeEntryDelta(rec), 'candidate')).field).toBe('delta.parts[0].at');
    const part: EntryDelta = { op: DeltaOp.Part, anchor: 'kv', anchorVersion: 9, delta: set('a', '1') };
    expect(decodeEntryDelta(encodeEntryDelta(part), 'record')).toEqual(part);
    expect(wireFault(() => decodeEntryDelta(encodeEntryDelta(part), 'candidate')).field).toBe('delta.op');
    for (let n = 0; n < b.length; n++) wireFault(() => readEntryDelta(new Reader(b.subarray(0, n)), 'delta', 'candidate'));
    // The example of PROTOCOL.md §4.6.
    expect(Buffer.from(encodeEntryDelta(cross(['kv', set('a', '1')], ['kv2', del('b')]))).toString('hex')).toBe(
      '0602026b76000101610131036b763200020162',
    );
  });

  it('refuses one part, more than 16, a register twice, a cross or part inside a part, more than 256 ops', () => {
    const at = (d: EntryDelta): string => wireFault(() => decodeEntryDelta(encodeEntryDelta(d), 'candidate')).field;
    expect(at(cross(['kv', set('a', '1')]))).toBe('delta.parts');
    expect(at(cross(...Array.from({ length: 17 }, (_, i): [string, Delta] => [`r${i}`, set('a', '1')])))).toBe('delta.parts');
    expect(at(cross(['kv', set('a', '1')], ['kv', set('b', '1')]))).toBe('delta.parts[1].register');
    const inner = encodeEntryDelta(cross(['kv', set('a', '1')], ['kv2', set('a', '1')]));
    const nested = encodeEntryDelta(cross(['kv', set('a', '1')], ['kv2', set('b', '1')]));
    nested.set(inner.subarray(0, 1), nested.length - 5); // part 1's op byte → 6
    expect(wireFault(() => decodeEntryDelta(nested, 'candidate')).field).toBe('delta.parts[1].delta.op');
    const many = (n: number): Delta => ({ op: DeltaOp.Txn, ops: Array.from({ length: n }, (_, i) => del(`k${i}`)) as SimpleDelta[] });
    expect(at(cross(['kv', many(200)], ['kv2', many(57)]))).toBe('delta.parts[1].delta');
  });
});

describe('decided whole at both ends', () => {
  for (const from of ['sequencer', 'follower'] as const) {
    it(`from the ${from}: every part commits at its register's next version, hashes as replayed; a failed guard in any part changes nothing`, () => {
      const h = harness(REGS);
      expect(h.settle()).toBe(true);
      const ep = from === 'sequencer' ? h.a : h.b;
      proposeNow(h, h.a, 'kv2', set('x', 'old'));
      expect(h.settle()).toBe(true);
      const xv = mapOf(h, 'a', 'kv2').get(enc('x'))!.version;
      const id = proposeNow(
        h,
        ep,
        'kv',
        cross(['kv', set('a', '1')], ['kv2', txn(set('b', '2'), cas('x', xv, 'new'))], ['s', append(0, 'log')]),
      );
      expect(h.settle()).toBe(true);
      expect(outcomeOf(h, id)).toMatchObject({ verdict: 'committed' });
      for (const side of ['a', 'b'] as const) {
        expect(text(mapOf(h, side, 'kv').get(enc('a'))?.value)).toBe('1');
        expect(['b', 'x'].map((k) => text(mapOf(h, side, 'kv2').get(enc(k))?.value))).toEqual(['2', 'new']);
        expect(text((h[side].pair.register('s').state as StreamState).read(0, 10))).toBe('log');
      }
      for (const r of ['kv', 'kv2', 's']) expect(ends(h, r)[1]).toEqual(ends(h, r)[0]);
      // Each register's hash is its part applied at its own version (the O(1) contract per register).
      const v2 = h.a.pair.register('kv2').version;
      const replay = new MapState(1234);
      replay.apply(set('x', 'old'), xv);
      replay.apply(txn(set('b', '2'), cas('x', xv, 'new')), v2);
      expect([replay.hash.hi, replay.hash.lo]).toEqual([h.b.pair.register('kv2').hash.hi, h.b.pair.register('kv2').hash.lo]);

      // A guard in part 1 fails (op index counts across parts: kv's 1 op, then kv2's ops): nothing anywhere.
      const before = ['kv', 'kv2', 's'].map((r) => ends(h, r)[0]);
      const bad = proposeNow(
        h,
        ep,
        'kv',
        cross(['kv', set('a', 'NEW')], ['kv2', txn(set('b', 'NEW'), cas('x', xv, 'NEW'))], ['s', append(3, '!')]),
      );
      expect(h.settle()).toBe(true);
      expect(outcomeOf(h, bad)).toMatchObject({ verdict: 'rejected', reason: 'cas-version-mismatch', op: 2 });
      // Only the anchor took a version (for the rejection); no part record anywhere.
      const after = ['kv', 'kv2', 's'].map((r) => ends(h, r)[0] as number[]);
      expect(after[0][0]).toBe((before[0] as number[])[0] + 1);
      expect(after.slice(1)).toEqual(before.slice(1));
      for (const side of ['a', 'b'] as const) expect(text(mapOf(h, side, 'kv').get(enc('a'))?.value)).toBe('1');
    });
  }

  it('a local proposal naming a missing register, the wrong kind, or its anchor elsewhere is refused before it is a candidate', () => {
    const h = harness(REGS);
    h.settle();
    const refused = (d: EntryDelta, re: RegExp): void => {
      const e = (() => {
        try {
          h.b.pair.propose(h.world.now, 'kv', d);
        } catch (x) {
          return x;
        }
      })();
      expect(e).toBeInstanceOf(ProposeError);
      expect((e as ProposeError).message).toMatch(re);
    };
    refused(cross(['kv', set('a', '1')], ['nope', set('a', '1')]), /part 1: no register nope/);
    refused(cross(['kv', set('a', '1')], ['s', set('a', '1')]), /register s: stream register cannot take delta op Set/);
    refused(cross(['kv2', set('a', '1')], ['kv', set('a', '1')]), /part 0 names register kv2, not kv/);
    expect(h.b.pair.register('kv').pendingCount).toBe(0);
  });
});

/** Every committed cross txn i wrote key `t${i}` in kv and kv2: at `side`, both or neither. */
function atomicAt(h: Harness, side: 'a' | 'b', n: number): string | undefined {
  const kv = mapOf(h, side, 'kv');
  const kv2 = mapOf(h, side, 'kv2');
  for (let i = 0; i < n; i++) {
    const k = enc(`t${i}`);
    if ((kv.get(k) === undefined) !== (kv2.get(k) === undefined)) return `txn ${i}: kv ${kv.get(k) ? 'has' : 'lacks'} it, kv2 the opposite`;
  }
  return undefined;
}

/** Run the world to `until`, checking atomic visibility at both ends after every step. */
function runChecked(h: Harness, n: number, until: number, stop: () => boolean = () => false): boolean {
  let broken: string | undefined;
  const done = h.world.run(
    until,
    () => {
      broken ??= atomicAt(h, 'a', n) ?? atomicAt(h, 'b', n);
      return broken !== undefined || stop();
    },
    0,
  );
  expect(broken).toBeUndefined();
  return done;
}

describe('atomic visibility at the follower', () => {
  for (const seed of [1, 2, 3, 4]) {
    it(`seed ${seed}: 30% loss, 40% reordering, writes from both ends: no step shows one part without the other`, () => {
      const h = harness(REGS, { loss: 0.3, reorder: 0.4, dup: 0.05 }, seed);
      expect(h.settle()).toBe(true);
      const n = 120;
      for (let i = 0; i < n; i++) {
        const ep = i % 2 === 0 ? h.a : h.b;
        // Plain writes between them keep both registers' versions apart.
        if (i % 3 === 0) proposeNow(h, ep, 'kv2', set(`p${i}`, 'x'));
        proposeNow(
          h,
          ep,
          i % 4 === 1 ? 'kv2' : 'kv',
          i % 4 === 1
            ? cross(['kv2', set(`t${i}`, `${i}`)], ['kv', set(`t${i}`, `${i}`)])
            : cross(['kv', set(`t${i}`, `${i}`)], ['kv2', set(`t${i}`, `${i}`)]),
        );
        runChecked(h, n, h.world.now + 3);
      }
      expect(runChecked(h, n, h.world.now + 120_000, () => h.aligned())).toBe(true);
      for (const r of ['kv', 'kv2']) expect(ends(h, r)[1]).toEqual(ends(h, r)[0]);
      for (let i = 0; i < n; i++) expect(text(mapOf(h, 'b', 'kv').get(enc(`t${i}`))?.value)).toBe(`${i}`);
    });
  }

  it('across a cut: by log replay the follower applies each txn whole; past the log (reconciliation) both ends agree at the end', () => {
    for (const maxRecords of [4096, 4]) {
      const h = harness([
        { name: 'kv', kind: 'map', log: { maxRecords, maxBytes: 1 << 22 } },
        { name: 'kv2', kind: 'map', log: { maxRecords, maxBytes: 1 << 22 } },
      ]);
      expect(h.settle()).toBe(true);
      h.cut();
      const n = 60;
      const ids = [];
      for (let i = 0; i < n; i++) {
        ids.push(proposeNow(h, i % 2 ? h.b : h.a, 'kv', cross(['kv', set(`t${i}`, `${i}`)], ['kv2', set(`t${i}`, `${i}`)])));
        proposeNow(h, h.a, 'kv2', set(`p${i}`, 'x'));
      }
      h.world.run(h.world.now + 10_000);
      h.heal();
      const settled = maxRecords > 100 ? runChecked(h, n, h.world.now + 120_000, () => h.aligned()) : h.settle(120_000);
      expect(settled).toBe(true);
      expect(atomicAt(h, 'b', n)).toBeUndefined();
      for (const r of ['kv', 'kv2']) expect(ends(h, r)[1]).toEqual(ends(h, r)[0]);
      for (const id of ids) expect(outcomeOf(h, id)).toMatchObject({ verdict: 'committed' });
      expect(h.b.pair.stats.reentanglements).toBeGreaterThan(0);
    }
  });
});

describe('a group whose record diverges at the follower', () => {
  it('is logged nowhere, and every register of it reconciles: a part logged without its anchor would be cut at a restart, with what came after it', () => {
    const h = harness(REGS);
    expect(h.settle()).toBe(true);
    const at = h.a.pair.register('kv2').version + 1;
    h.world.net.setLink('A', 'B', false); // the records wait; what was under way arrives meanwhile
    const id = proposeNow(h, h.a, 'kv', cross(['kv', set('a', '1')], ['kv2', set('b', '2')]));
    h.world.run(h.world.now + 20);
    expect(h.a.pair.register('kv2').version).toBe(at);
    // The follower's kv now differs from the sequencer's (memory corruption): the anchor record will not hash.
    mapOf(h, 'b', 'kv').put(enc('zz'), enc('bad'), 999_999);
    h.world.net.setLink('A', 'B', true);
    const told = h.events.length;
    expect(h.settle(120_000)).toBe(true);
    for (const r of ['kv', 'kv2']) expect(ends(h, r)[1]).toEqual(ends(h, r)[0]);
    expect(text(mapOf(h, 'b', 'kv2').get(enc('b'))?.value)).toBe('2');
    expect(outcomeOf(h, id)).toMatchObject({ verdict: 'committed' });
    // The part record was applied with its anchor, whose hash failed: neither was logged (no collapse
    // told at the follower), and both registers were replaced by reconciliation.
    const seen = h.events
      .slice(told)
      .flatMap(({ ep, ev }) =>
        ep === 'B' && (ev.type === 'collapse' || ev.type === 'reentangled')
          ? [`${ev.type} ${ev.register}${ev.type === 'reentangled' ? ` ${ev.method}` : ''}`]
          : [],
      );
    expect(seen.filter((x) => !x.endsWith(' s log'))).toEqual(['reentangled kv reconcile', 'reentangled kv2 reconcile']);
  });
});

describe('the seeded pair simulator with cross-register txns (kv + log)', () => {
  it('200 seeds at 30% loss with cuts and reconciliation: convergence, every committed part in its register, none lost', () => {
    const s = runSeeds(200, 1, { ...SIM_DEFAULTS, loss: 0.3, dup: 0.05, reorder: 0.2, cuts: true, cross: 0.4, txn: 0.1 });
    expectSeedsClean(s, 200);
    expect(s.rejected).toBeGreaterThan(50);
    expect(s.reconciles).toBeGreaterThan(5);
  });

  it('100 seeds with crashes and store faults: what was acknowledged survives, groups whole', () => {
    const s = runSeeds(100, 1, { ...SIM_DEFAULTS, crashes: true, storeFaults: 0.01, cross: 0.4 });
    expectSeedsClean(s, 100);
  });
});

describe('durability', () => {
  /** A pair over a store in `dir`, loaded from it (as spookd starts). */
  function open(dir: string, localId = 1) {
    const store = new DiskStore(dir, 'always');
    const pair = new HalfPair({ pairId: 1, localId, peerId: 3 - localId, seed: 77, registers: REGS, writes: 'driver' }, 0);
    for (const r of pair.registers.values()) store.load(r);
    return { store, pair };
  }
  const state = (p: HalfPair): unknown[] => ['kv', 'kv2'].map((r) => [p.register(r).version, p.register(r).hash.hi, p.register(r).hash.lo]);

  it('a pending record carries its stamp as a trailing varint; one written before rev 1.24 (none) still decodes', () => {
    const c = { seq: 7, delta: set('k', 'v') };
    const withStamp = encodePendingRecord({ ...c, stamp: 300 });
    const without = encodePendingRecord(c);
    expect(withStamp.length).toBe(without.length + 2);
    expect(decodePendingRecord(withStamp)).toEqual({ ...c, stamp: 300 });
    expect(decodePendingRecord(without)).toEqual(c);
  });

  it('own candidates restored after a restart keep their order across registers: a cross txn is decided after the write its proposer made before it on another register', () => {
    const dir = mkdtempSync(join(tmpdir(), 'spook-cross-'));
    dirs.push(dir);
    const a = open(dir);
    // Both told "pending" before any collapse (secureOwn): recorded in each register's pending file.
    // kv2 is loaded after kv, so load order alone would propose the cross first.
    const x = a.pair.propose(0, 'kv2', set('b', 'x'));
    const c = a.pair.propose(0, 'kv', cross(['kv', set('a', 'c')], ['kv2', set('b', 'c')]));
    expect([a.pair.secureOwn(0, 'kv2', x.seq), a.pair.secureOwn(0, 'kv', c.seq)]).toEqual([true, true]);
    a.store.persist(a.pair.pollWrites());
    a.pair.writesDurable();
    a.store.close();
    const b = open(dir);
    // A new write after the restart comes after both (the pair's stamps go on above the restored ones).
    b.pair.propose(0, 'kv2', set('y', 'y'));
    for (let i = 0; i < 4; i++) b.pair.collapse(0);
    const kv2 = b.pair.register('kv2').state as MapState;
    // x first, then the cross over it: 'b' is the cross's; then y, at a later version of kv2.
    expect([text(kv2.get(enc('b'))?.value), text((b.pair.register('kv').state as MapState).get(enc('a'))?.value)]).toEqual(['c', 'c']);
    expect(kv2.get(enc('y'))!.version).toBeGreaterThan(kv2.get(enc('b'))!.version);
    b.store.close();
  });

  /** Rewrite a register's pending file, mapping each decoded record (a file as an older release, or damage, left it). */
  function editPending(dir: string, register: string, f: (c: OwnCandidate, i: number) => OwnCandidate): void {
    const path = join(dir, register, 'pending');
    const recs = readFrames(readFileSync(path), MAX_PAIR_RECORD, sha256).records.map(({ rec }) => decodePendingRecord(rec)!);
    writeFileSync(path, Buffer.concat(recs.map((c, i) => frameRecord(encodePendingRecord(f(c, i)), sha256))));
  }

  it('a restored candidate without a stamp (written before rev 1.24) counts as older than every stamped one', () => {
    const dir = mkdtempSync(join(tmpdir(), 'spook-cross-'));
    dirs.push(dir);
    const a = open(dir);
    const p = a.pair.propose(0, 'kv2', set('b', 'p'));
    const x = a.pair.propose(0, 'kv2', set('b', 'x'));
    const c = a.pair.propose(0, 'kv', cross(['kv', set('a', 'c')], ['kv2', set('b', 'c')]));
    for (const [r, q] of [
      ['kv2', p.seq],
      ['kv2', x.seq],
      ['kv', c.seq],
    ] as const)
      expect(a.pair.secureOwn(0, r, q)).toBe(true);
    a.store.persist(a.pair.pollWrites());
    a.pair.writesDurable();
    a.store.close();
    editPending(dir, 'kv2', (rec, i) => (i === 0 ? { seq: rec.seq, delta: rec.delta } : rec)); // p as an older release wrote it
    const b = open(dir);
    for (let i = 0; i < 4; i++) b.pair.collapse(0);
    // Proposed p, x, then the cross: 'b' is the cross's.
    expect(text((b.pair.register('kv2').state as MapState).get(enc('b'))?.value)).toBe('c');
    b.store.close();
  });

  it('a stamp out of bounds in a pending file is read as none: the candidate stands, later ones are written', () => {
    const dir = mkdtempSync(join(tmpdir(), 'spook-cross-'));
    dirs.push(dir);
    const a = open(dir);
    const p = a.pair.propose(0, 'kv2', set('b', 'p'));
    expect(a.pair.secureOwn(0, 'kv2', p.seq)).toBe(true);
    a.store.persist(a.pair.pollWrites());
    a.pair.writesDurable();
    a.store.close();
    editPending(dir, 'kv2', (rec) => ({ ...rec, stamp: Number.MAX_SAFE_INTEGER }));
    const b = open(dir);
    expect(b.pair.register('kv2').pendingCount).toBe(1);
    const y = b.pair.propose(0, 'kv', set('y', 'y'));
    expect(b.pair.secureOwn(0, 'kv', y.seq)).toBe(true);
    b.store.persist(b.pair.pollWrites()); // a stamp past 2^53 would not encode
    b.pair.writesDurable();
    b.store.close();
  });

  it('a committed cross txn survives a restart in every register; a group torn by a crash is dropped from every register', () => {
    const dir = mkdtempSync(join(tmpdir(), 'spook-cross-'));
    dirs.push(dir);
    const a = open(dir);
    a.pair.propose(0, 'kv', cross(['kv', set('a', '1')], ['kv2', set('b', '2')]));
    a.pair.collapse(0);
    a.store.persist(a.pair.pollWrites());
    a.pair.writesDurable();
    const committed = state(a.pair);
    a.pair.propose(0, 'kv', cross(['kv', set('a', '3')], ['kv2', set('b', '4')]));
    a.pair.collapse(0);
    a.store.persist(a.pair.pollWrites());
    a.pair.writesDurable();
    a.store.close();
    const b = open(dir);
    expect(text((b.pair.register('kv').state as MapState).get(enc('a'))?.value)).toBe('3');
    expect(text((b.pair.register('kv2').state as MapState).get(enc('b'))?.value)).toBe('4');
    b.store.close();
    // A crash after the anchor's record reached the disk and before the part's did: kv2 loses its last record.
    const kv2log = join(
      dir,
      'kv2',
      readdirSync(join(dir, 'kv2')).find((f) => f.startsWith('log'))!,
    );
    const size = statSync(kv2log).size;
    truncateSync(kv2log, size - 3);
    const c = open(dir);
    // The torn group is gone from both registers: the state is the first txn's, whole.
    expect(state(c.pair)).toEqual(committed);
    expect(text((c.pair.register('kv').state as MapState).get(enc('a'))?.value)).toBe('1');
    expect(text((c.pair.register('kv2').state as MapState).get(enc('b'))?.value)).toBe('2');
    c.store.close();
  });
});

describe('a hostile sequencer or proposer', () => {
  it('a part record whose anchor never comes, or a cross entry naming parts that never come, holds only that register; nothing throws', () => {
    const h = harness(REGS);
    h.settle();
    const v2 = h.b.pair.register('kv2').version;
    const orphan = encodeMessage({
      type: MsgType.Collapse,
      register: 'kv2',
      version: v2 + 1,
      hash: { hi: 1, lo: 2 },
      entries: [
        { origin: 1, seq: 1, verdict: 'committed', delta: { op: DeltaOp.Part, anchor: 'kv', anchorVersion: 1_000, delta: set('z', 'z') } },
      ],
    });
    expect(() => h.b.pair.handlePayload(h.world.now, 90_000, orphan)).not.toThrow();
    expect(mapOf(h, 'b', 'kv2').get(enc('z'))).toBeUndefined();
    // A Propose of op 6 whose anchor is another register: rejected at collapse, whole.
    const wrong = encodeMessage({
      type: MsgType.Propose,
      register: 'kv',
      base: 1,
      candidates: [{ origin: 2, seq: 1, delta: cross(['kv2', set('q', '1')], ['kv', set('q', '1')]) }],
    });
    expect(() => h.a.pair.handlePayload(h.world.now, 90_001, wrong)).not.toThrow();
    h.a.pair.collapse(h.world.now);
    expect(mapOf(h, 'a', 'kv').get(enc('q'))).toBeUndefined();
    expect(mapOf(h, 'a', 'kv2').get(enc('q'))).toBeUndefined();
    // The pair goes on: the sequencer's next kv2 record replaces the forged one held at that version.
    const id = proposeNow(h, h.a, 'kv2', set('ok', '1'));
    const id2 = proposeNow(h, h.a, 'kv', cross(['kv', set('c', '1')], ['kv2', set('c', '1')]));
    expect(h.settle()).toBe(true);
    expect(outcomeOf(h, id)).toMatchObject({ verdict: 'committed' });
    expect(outcomeOf(h, id2)).toMatchObject({ verdict: 'committed' });
    expect(text(mapOf(h, 'b', 'kv2').get(enc('c'))?.value)).toBe('1');
    for (const r of ['kv', 'kv2']) expect(ends(h, r)[1]).toEqual(ends(h, r)[0]);
  });
});
