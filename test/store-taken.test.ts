/**
 * What the end of a batch rewrites (a snapshot of a register whose log grew too long, a pending
 * list past 1 MiB) is taken from the replicas when the batch is written, not when its fsyncs end
 * (DiskStore `TakenBatch`, PROTOCOL.md §10.1). spookd syncs a batch off the event loop, and the
 * pair steps on meanwhile: what it applies then is in the next batch, not on disk. Taken at the
 * end, a snapshot could hold a part of a cross-register txn whose anchor's record a crash then
 * lost, and a pending list could drop a candidate whose deciding record a crash then lost.
 */
import { describe, expect, it } from 'vitest';
import { existsSync, fstatSync, readFileSync, readlinkSync, truncateSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { HalfPair } from '../core/pair/halfpair.js';
import type { RegisterSpec } from '../core/pair/types.js';
import type { MapState } from '../core/register/map.js';
import { DiskStore, StoreRefused } from '../drivers/store/store.js';
import { decodeReplacing, encodeReplacing } from '../wire/journal.js';
import { hash } from '../crypto/primitives.js';
import { cross, enc, set, tempDirs } from './helpers.js';

const REGS: RegisterSpec[] = [
  { name: 'kv', kind: 'map' },
  { name: 'kv2', kind: 'map' },
];
const tmp = tempDirs('spook-taken');
const text = (p: HalfPair, r: string, k: string): string | undefined => {
  const v = (p.register(r).state as MapState).get(enc(k));
  return v && new TextDecoder().decode(v.value);
};

/**
 * A DiskStore that knows what a power loss would keep: each file as long as it was at its last
 * fsync through the store (snapshots are written atomically, fsynced before their rename).
 */
class PowerLossStore extends DiskStore {
  private readonly synced = new Map<string, number>();
  /**
   * The process stops right before or right after the rename of the next snapshot or replacement
   * record written at once, past `killSkip` more of them (kill -9: what was written stays).
   */
  kill: 'before-snapshot' | 'after-snapshot' | undefined;
  killSkip = 0;
  protected override writeSnapshot(path: string, data: Uint8Array, dir: string): void {
    const now = this.kill !== undefined && this.killSkip-- === 0;
    if (now && this.kill === 'before-snapshot') throw new Error('killed');
    super.writeSnapshot(path, data, dir);
    if (now && this.kill === 'after-snapshot') throw new Error('killed');
  }
  /** The process stops right after this many more renames of a replacement's snapshot (undefined: never). */
  killAfterRenames: number | undefined;
  protected override renameSnapshot(from: string, to: string): void {
    super.renameSnapshot(from, to);
    if (this.killAfterRenames !== undefined && --this.killAfterRenames === 0) throw new Error('killed');
  }
  /** The process stops right after this many more fsyncs through the store (undefined: never). */
  killAfterSyncs: number | undefined;
  protected override syncFd(fd: number): void {
    super.syncFd(fd);
    this.synced.set(readlinkSync(`/proc/self/fd/${fd}`), fstatSync(fd).size);
    if (this.killAfterSyncs !== undefined && --this.killAfterSyncs === 0) throw new Error('killed');
  }
  /** The power goes: what no fsync covered is gone (the store's files closed first, unsynced). */
  powerLoss(): void {
    this.close();
    for (const [path, size] of this.synced) if (existsSync(path)) truncateSync(path, size);
  }
}

/** A sequencer over a store in `dir` (as spookd starts it), its logs snapshotted past `maxLogBytes`. */
function open(dir: string, maxLogBytes = 1 << 30, background = false) {
  const store = new PowerLossStore(dir, 'always', maxLogBytes);
  if (background) store.backgroundSnapshotBytes = 0;
  const pair = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 77, registers: REGS, writes: 'driver' }, 0);
  for (const r of pair.registers.values()) store.load(r);
  return { store, pair };
}

/** One set, committed and made durable in a batch of its own. */
function commitSet(a: ReturnType<typeof open>, register: string, key: string, value: string): void {
  a.pair.propose(0, register, set(key, value));
  a.pair.collapse(0);
  a.store.persist(a.pair.pollWrites());
  a.pair.writesDurable();
}

/** `n` sets of kv (`a0`… = 'x'), each in a batch of its own. */
function commitEach(a: ReturnType<typeof open>, n: number): void {
  for (let i = 0; i < n; i++) commitSet(a, 'kv', `a${i}`, 'x');
}

describe('DiskStore: a batch ends with what it held, whatever the pair did while it synced', () => {
  for (const background of [false, true])
    it(`a snapshot due at the batch's end holds the batch's state, not a later part whose anchor a crash loses (${background ? 'in the background' : 'at once'})`, async () => {
      const dir = tmp();
      const a = open(dir, 2_000, background);
      // Batch 1: kv2's log outgrows maxLogBytes; kv's does not.
      for (let i = 0; i < 60; i++) {
        a.pair.propose(0, 'kv2', set(`k${i}`, 'v'.repeat(20)));
        a.pair.collapse(0);
      }
      const fds = a.store.write(a.pair.pollWrites());
      const v1 = a.pair.register('kv2').version;
      // While its fsyncs run, a cross-register txn anchored at kv commits in memory: its records
      // (kv's anchor, kv2's part) wait for the next batch.
      a.pair.propose(0, 'kv', cross(['kv', set('a', 'anchor')], ['kv2', set('b', 'part')]));
      a.pair.collapse(0);
      expect(a.pair.register('kv2').version).toBe(v1 + 1);
      await a.store.syncAll(fds);
      a.store.batchDurable();
      a.pair.writesDurable();
      if (background) await a.store.snapshotting('kv2');
      expect(existsSync(join(dir, 'kv2', 'snapshot'))).toBe(true);
      // The process dies before the next batch is written.
      a.store.close();

      const b = open(dir);
      expect(b.pair.register('kv2').version).toBe(v1);
      expect([text(b.pair, 'kv', 'a'), text(b.pair, 'kv2', 'b')]).toEqual([undefined, undefined]);
      expect(text(b.pair, 'kv2', 'k59')).toBe('v'.repeat(20));
      b.store.close();
    });

  it('a register ahead of its log (a record applied and never logged: its hash diverged) is not snapshotted when its log is due', () => {
    const dir = tmp();
    const a = open(dir, 2_000);
    for (let i = 0; i < 60; i++) {
      a.pair.propose(0, 'kv2', set(`k${i}`, 'v'.repeat(20)));
      a.pair.collapse(0);
    }
    // The last record is not logged, as a follower's diverged record is not: the replica is one version ahead.
    const writes = a.pair.pollWrites();
    const last = writes.findLastIndex((w) => w.kind === 'append');
    a.store.persist(writes.filter((_, i) => i !== last));
    a.pair.writesDurable();
    expect(existsSync(join(dir, 'kv2', 'snapshot'))).toBe(false);
    a.store.close();
    const b = open(dir);
    expect(b.pair.register('kv2').version).toBe(59);
    b.store.close();
  });

  it('a pending list rewritten at the batch end keeps the own candidates the batch left undecided', async () => {
    const dir = tmp();
    const a = open(dir);
    // Own candidates told "pending" (secureOwn): recorded, 1.2 MiB of them, so the list is rewritten at the batch end.
    const seqs: number[] = [];
    for (let i = 0; i < 20; i++) {
      const { seq } = a.pair.propose(0, 'kv', set(`big${i}`, String.fromCharCode(97 + i).repeat(60_000)));
      expect(a.pair.secureOwn(0, 'kv', seq)).toBe(true);
      seqs.push(seq);
    }
    const fds = a.store.write(a.pair.pollWrites());
    // Decided while the batch syncs: the collapse that decides them is in the next batch.
    a.pair.collapse(0);
    expect(text(a.pair, 'kv', 'big0')?.length).toBe(60_000);
    await a.store.syncAll(fds);
    a.store.batchDurable();
    a.pair.writesDurable();
    a.store.close(); // dies before the next batch

    const b = open(dir);
    // Still undecided on disk: proposed again, none lost.
    expect(b.pair.register('kv').pendingCount).toBe(seqs.length);
    b.pair.collapse(0);
    expect(text(b.pair, 'kv', 'big19') === 't'.repeat(60_000)).toBe(true);
    b.store.close();
  });

  it("a register replaced in a batch is snapshotted after the batch's other records are durable: a part it holds never outlives its anchor", () => {
    const dir = tmp();
    const a = open(dir);
    commitSet(a, 'kv', 'x', '1');
    // A follower's batch that replaces kv2 and then holds records applied right after (here a
    // txn: anchor in kv, part in kv2): the image the store snapshots is kv2 as the batch left it,
    // with the part, so it is written last, once the rest of the batch is durable.
    // (A lone sequencer's pair makes the records; the store cannot tell.)
    a.pair.propose(0, 'kv', cross(['kv', set('a', 'anchor')], ['kv2', set('b', 'part')]));
    a.pair.collapse(0);
    const kv2 = a.pair.registers.get('kv2')!;
    const batch = [{ kind: 'replaced' as const, image: kv2, version: 0 }, ...a.pair.pollWrites()];
    a.store.write(batch);
    // The power goes before the batch's fsyncs: nothing of it (its snapshot is written only after them).
    expect(existsSync(join(dir, 'kv2', 'snapshot.next'))).toBe(false);
    a.store.powerLoss();
    let b = open(dir);
    expect([text(b.pair, 'kv', 'a'), text(b.pair, 'kv2', 'b'), text(b.pair, 'kv', 'x')]).toEqual([undefined, undefined, '1']);
    b.store.close();

    // Again, the power going once the snapshot is written, before it lands: still nothing of it.
    const c = open(dir);
    c.pair.propose(0, 'kv', cross(['kv', set('a', 'anchor')], ['kv2', set('b', 'part')]));
    c.pair.collapse(0);
    c.store.syncNow(
      c.store.write([{ kind: 'replaced' as const, image: c.pair.registers.get('kv2')!, version: 0 }, ...c.pair.pollWrites()]),
    );
    expect(existsSync(join(dir, 'kv2', 'snapshot.next'))).toBe(true);
    c.store.powerLoss();
    b = open(dir);
    expect([text(b.pair, 'kv', 'a'), text(b.pair, 'kv2', 'b'), text(b.pair, 'kv', 'x')]).toEqual([undefined, undefined, '1']);
    b.store.close();
  });

  it("a batch whose end cannot be taken (a due snapshot's encoding throws) after its replacement record was written fails the store: no later batch is written", () => {
    const dir = tmp();
    const a = open(dir, 1); // every append makes its register's snapshot due
    commitEach(a, 5);
    const seq = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 77, registers: REGS }, 0);
    for (let i = 0; i < 3; i++) {
      seq.propose(0, 'kv', set(`b${i}`, 'y'));
      seq.collapse(0);
    }
    // kv lowered to the sequencer's v3 and, in the same batch, a record of kv2: the undo record is out.
    a.pair.propose(0, 'kv2', set('c', 'z'));
    a.pair.collapse(0);
    const kv2 = a.pair.register('kv2').state as MapState;
    kv2.fullTransferBytes = () => {
      throw new Error('out of memory');
    };
    expect(() => a.store.write([{ kind: 'replaced', image: seq.registers.get('kv')!, version: 3 }, ...a.pair.pollWrites()])).toThrow(
      /out of memory/,
    );
    delete (kv2 as Partial<MapState>).fullTransferBytes; // the memory is back
    // Whatever the caller does next (spookd fences the pair), the store takes no later batch.
    expect(() => a.store.write([])).toThrow(/after a failed write/);
    a.store.close();
  });

  for (const kill of ['before-snapshot', 'after-snapshot'] as const)
    it(`a reconciliation to a lower version (a sequencer that lost versions) lands whole or not at all: killed ${kill.replace('-', ' the replacement record of ')}the batch, a restart loads the ${kill === 'before-snapshot' ? 'old' : 'new'} history`, () => {
      const dir = tmp();
      const a = open(dir);
      commitEach(a, 5); // kv a0..a4 at v1..v5, one batch each
      // The sequencer's history now: 3 versions, other contents.
      const seq = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 77, registers: REGS }, 0);
      for (let i = 0; i < 3; i++) {
        seq.propose(0, 'kv', set(`b${i}`, 'y'));
        seq.collapse(0);
      }
      a.store.kill = kill;
      expect(() => a.store.persist([{ kind: 'replaced', image: seq.registers.get('kv')!, version: 3 }])).toThrow(/killed/);
      a.store.close();

      const b = open(dir);
      // After the record: the new history, the old log's v4 and v5 never replayed onto it. Before: the old one, whole.
      const want = kill === 'after-snapshot' ? [3, 'y', undefined] : [5, undefined, 'x'];
      expect([b.pair.register('kv').version, text(b.pair, 'kv', 'b2'), text(b.pair, 'kv', 'a4')]).toEqual(want);
      b.store.close();
    });

  for (const lands of [false, true])
    it(`a lowering replacement with a txn after it in its batch, killed ${lands ? 'after' : 'before'} the commit record: ${lands ? 'the new history, whole' : "the other register's part is taken back with the batch"}`, () => {
      const dir = tmp();
      const a = open(dir);
      commitEach(a, 5); // kv a0..a4 at v1..v5, one batch each
      // The sequencer's history: kv at v2, then a txn whose anchor is its v3 and whose part is kv2's v1.
      const seq = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 77, registers: REGS, writes: 'driver' }, 0);
      for (let i = 0; i < 2; i++) {
        seq.propose(0, 'kv', set(`b${i}`, 'y'));
        seq.collapse(0);
      }
      seq.pollWrites();
      seq.writesDurable();
      const image = seq.registers.get('kv')!;
      seq.propose(0, 'kv', cross(['kv', set('a', 'anchor')], ['kv2', set('b', 'part')]));
      seq.collapse(0);
      const after = seq.pollWrites();
      expect(after.map((w) => (w.kind === 'append' ? `${w.register} v${w.rec.version}` : w.kind))).toEqual(['kv2 v1', 'kv v3']);
      // A follower's batch: kv replaced at v2 (below its log's v5; the old log's v3 is no anchor of
      // kv2's part), then the txn's records. kv2's part is appended and fsynced before kv's snapshot lands.
      a.store.kill = lands ? 'after-snapshot' : 'before-snapshot';
      a.store.killSkip = 1; // the undo record first, then the commit record
      expect(() => a.store.persist([{ kind: 'replaced', image, version: 2 }, ...after])).toThrow(/killed/);
      // Its replacement record is left for the next load: this store writes nothing more (taking the
      // batch back would cut a later one too).
      expect(() => a.store.write([{ kind: 'lease', register: 'kv', upTo: 4096 }])).toThrow(/write after a failed write or flush/);
      a.store.close();

      const b = open(dir);
      const want = lands ? [3, 1, 'anchor', 'part', undefined] : [5, 0, undefined, undefined, 'x'];
      const got = [
        b.pair.register('kv').version,
        b.pair.register('kv2').version,
        text(b.pair, 'kv', 'a'),
        text(b.pair, 'kv2', 'b'),
        text(b.pair, 'kv', 'a1'),
      ];
      expect(got).toEqual(want);
      b.store.close();
    });

  for (const kill of ['before the commit record', 'after the first log is emptied'] as const)
    it(`a lowering replacement while a background snapshot is under way (cancelled, its log.old left): killed ${kill}, a restart loads`, async () => {
      const dir = tmp();
      const a = open(dir, 150, true);
      commitEach(a, 8);
      expect(a.store.snapshotting('kv')).toBeDefined(); // rotated: log.old holds the first records
      expect(existsSync(join(dir, 'kv', 'log.old'))).toBe(true);
      const seq = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 77, registers: REGS }, 0);
      for (let i = 0; i < 2; i++) {
        seq.propose(0, 'kv', set(`b${i}`, 'y'));
        seq.collapse(0);
      }
      if (kill === 'before the commit record') a.store.kill = 'before-snapshot';
      else a.store.killAfterSyncs = 1; // right after the emptied log's fsync, before log.old goes
      expect(() => a.store.persist([{ kind: 'replaced', image: seq.registers.get('kv')!, version: 2 }])).toThrow(/killed/);
      a.store.close();
      await new Promise((r) => setTimeout(r, 50)); // the cancelled job lets go of the directory

      // Before the record: the old history whole (log.old, then the log). After it: the new one; log.old goes.
      const b = open(dir);
      const want = kill === 'before the commit record' ? [8, 'x', undefined] : [2, undefined, 'y'];
      expect([b.pair.register('kv').version, text(b.pair, 'kv', 'a7'), text(b.pair, 'kv', 'b1')]).toEqual(want);
      expect(existsSync(join(dir, 'kv', 'log.old'))).toBe(false);
      b.store.close();
    });

  it('a register replaced and then ahead of its last record in the batch (a record after the replacement diverged) is refused before anything is written', () => {
    const dir = tmp();
    const a = open(dir);
    commitSet(a, 'kv', 'x', '1');
    const seq = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 77, registers: REGS }, 0);
    for (let i = 0; i < 3; i++) {
      seq.propose(0, 'kv', set(`b${i}`, 'y'));
      seq.collapse(0);
    }
    // Replaced at v2, and at v3 with no record of v3 in the batch: v3 was applied, its hash failed, it was never logged.
    expect(() => a.store.write([{ kind: 'replaced', image: seq.registers.get('kv')!, version: 2 }])).toThrow(
      /register kv is at v3, its last record in the batch v2: not snapshotted/,
    );
    expect(() => a.store.write([{ kind: 'replaced', image: seq.registers.get('kv')!, version: 2 }])).toThrow(StoreRefused);
    a.store.close();
    const b = open(dir);
    expect([b.pair.register('kv').version, text(b.pair, 'kv', 'x')]).toEqual([1, '1']);
    b.store.close();
  });

  // PROTOCOL.md rev 1.24, open question 37 resolved: a crash between two renames loaded one
  // register's part of a txn applied after both replacements without the other's.
  const KILLS = [
    { at: 'before the commit record', set: (s: PowerLossStore) => (s.kill = 'before-snapshot'), lands: false },
    { at: 'after the commit record', set: (s: PowerLossStore) => (s.kill = 'after-snapshot'), lands: true },
    { at: 'between the two renames', set: (s: PowerLossStore) => (s.killAfterRenames = 1), lands: true },
    { at: 'after both renames', set: (s: PowerLossStore) => (s.killAfterRenames = 2), lands: true },
  ];
  for (const kill of KILLS)
    for (const background of [false, true])
      it(`two registers replaced in one batch land together: killed ${kill.at}, both load ${kill.lands ? 'new' : 'old'} and a txn between them whole (snapshots written ${background ? 'in the background' : 'at once'})`, async () => {
        const dir = tmp();
        const a = open(dir);
        // This end's history: kv at v1, kv2 at v5 (a reconciliation below lowers it to v2).
        a.pair.propose(0, 'kv', set('x', 'old'));
        for (let i = 0; i < 5; i++) {
          a.pair.propose(0, 'kv2', set(`y${i}`, 'old'));
          a.pair.collapse(0);
        }
        a.store.persist(a.pair.pollWrites());
        a.pair.writesDurable();
        expect([a.pair.register('kv').version, a.pair.register('kv2').version]).toEqual([1, 5]);
        // The sequencer's: a txn across both registers (kv's anchor, kv2's part), kv at v3 and kv2 at v2.
        const seq = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 77, registers: REGS }, 0);
        for (let i = 0; i < 2; i++) {
          seq.propose(0, 'kv', set(`n${i}`, 'new'));
          seq.collapse(0);
        }
        seq.propose(0, 'kv2', set('n', 'new'));
        seq.collapse(0);
        seq.propose(0, 'kv', cross(['kv', set('a', 'anchor')], ['kv2', set('b', 'part')]));
        seq.collapse(0);
        expect([seq.register('kv').version, seq.register('kv2').version]).toEqual([3, 2]);
        kill.set(a.store);
        const batch = [...seq.registers.values()].map((image) => ({ kind: 'replaced' as const, image, version: image.version }));
        if (background) {
          // spookd's path: the fsyncs and the snapshots off the event loop, then the landing.
          const fds = a.store.write(batch);
          expect(a.store.staging).toBe(true);
          await a.store.syncAll(fds);
          expect([existsSync(join(dir, 'kv', 'snapshot.next')), existsSync(join(dir, 'kv2', 'snapshot.next'))]).toEqual([true, true]);
          expect(() => a.store.batchDurable()).toThrow(/killed/);
        } else expect(() => a.store.persist(batch)).toThrow(/killed/);
        a.store.close();

        const b = open(dir);
        const got = [text(b.pair, 'kv', 'a'), text(b.pair, 'kv2', 'b'), text(b.pair, 'kv', 'x'), text(b.pair, 'kv2', 'y0')];
        expect(got).toEqual(kill.lands ? ['anchor', 'part', undefined, undefined] : [undefined, undefined, 'old', 'old']);
        expect([b.pair.register('kv').version, b.pair.register('kv2').version]).toEqual(kill.lands ? [3, 2] : [1, 5]);
        expect([existsSync(join(dir, '@replacing')), existsSync(join(dir, 'kv', 'snapshot.next'))]).toEqual([false, false]);
        // It goes on from there, and loads again.
        b.pair.propose(0, 'kv2', set('after', 'restart'));
        b.pair.collapse(0);
        b.store.persist(b.pair.pollWrites());
        b.pair.writesDurable();
        b.store.close();
        const c = open(dir);
        expect([text(c.pair, 'kv2', 'after'), text(c.pair, 'kv', 'a')]).toEqual(['restart', kill.lands ? 'anchor' : undefined]);
        c.store.close();
      });

  it('a damaged replacement record, or one naming a snapshot.next this batch did not write, stops the load, naming it', () => {
    const sha256 = (...parts: Uint8Array[]): Uint8Array => hash('SHA256', ...parts);
    const sum = (b: number) => new Uint8Array(32).fill(b);
    const entries = {
      kind: 'commit' as const,
      snapshots: [
        { register: 'kv', checksum: sum(1) },
        { register: 'ünï', checksum: sum(2) },
      ],
    };
    const undo = { kind: 'undo' as const, logs: [{ register: 'kv2', logBytes: 4096 }] };
    expect([decodeReplacing(encodeReplacing(entries, sha256), sha256), decodeReplacing(encodeReplacing(undo, sha256), sha256)]).toEqual([
      entries,
      undo,
    ]);
    const dir = tmp();
    open(dir).store.close();
    const rec = encodeReplacing(entries, sha256);
    rec[10] ^= 1;
    writeFileSync(join(dir, '@replacing'), rec);
    expect(() => open(dir)).toThrow(/@replacing: checksum mismatch/);
    expect(readFileSync(join(dir, '@replacing'))).toEqual(Buffer.from(rec)); // left for the operator
    // Whole, but kv's snapshot.next is not the file it names (a stale one, a restored directory): not renamed over kv's snapshot.
    writeFileSync(join(dir, '@replacing'), encodeReplacing({ kind: 'commit', snapshots: entries.snapshots.slice(0, 1) }, sha256));
    writeFileSync(join(dir, 'kv', 'snapshot.next'), new Uint8Array(100).fill(7));
    expect(() => open(dir)).toThrow(/register kv: neither .*snapshot\.next nor .*snapshot is the snapshot it names/);
    expect(existsSync(join(dir, 'kv', 'snapshot.next'))).toBe(true);
  });
});
