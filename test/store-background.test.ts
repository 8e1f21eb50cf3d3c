import { afterEach, describe, expect, it } from 'vitest';
import {
  cpSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HalfPair } from '../core/pair/halfpair.js';
import { DiskStore, StoreError, encodeRegisterSnapshot, restoreRegisterSnapshot } from '../drivers/store/store.js';
import { SNAPSHOT_PART, SnapshotJob, pinRegister, type PinnedRegister } from '../drivers/store/snapshot-job.js';
import { SNAPSHOT_SLICE } from '../core/register/slices.js';
import type { StreamState } from '../core/register/stream.js';
import { append, cross, del, set } from './helpers.js';
import { hash as cryptoHash } from '../crypto/primitives.js';
import { MAX_PAIR_RECORD, decodePairSnapshotHead, readFrames } from '../wire/journal.js';

// A large register's snapshot is written in the background (issue 16: written at once, 10^7 keys
// held the event loop ~6 s); what it writes, and that no stop, crash or failure mid-way loses a record.
const dirs: string[] = [];
const tmp = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'spook-bgsnap-'));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

const REGS = [
  { name: 'kv', kind: 'map' as const },
  { name: 's', kind: 'stream' as const },
];

/** A store whose background jobs can be held before their next slice (`hold`), to act while one is mid-way. */
class HeldStore extends DiskStore {
  private held = false;
  private readonly waiting: (() => void)[] = [];
  hold(): void {
    this.held = true;
  }
  release(): void {
    this.held = false;
    for (const go of this.waiting.splice(0)) go();
  }
  protected override snapshotJob(pin: PinnedRegister, dir: string, snap: string): SnapshotJob {
    return new SnapshotJob(pin, dir, snap, () => (this.held ? new Promise<void>((go) => this.waiting.push(go)) : Promise.resolve()));
  }
}

/** A sequencer over a store in `dir`; every snapshot in the background (backgroundSnapshotBytes 0) unless told. */
function open(dir: string, maxLogBytes = 4000, background = true) {
  const store = new HeldStore(dir, 'always', maxLogBytes);
  if (background) store.backgroundSnapshotBytes = 0;
  const pair = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 77, registers: REGS, store }, 0);
  const reports = [...pair.registers.values()].map((r) => store.load(r));
  return { store, pair, reports, kv: pair.register('kv') };
}

let n = 0;
/** One commit of `k` sets on kv (a few overwrites, a delete now and then). */
function commit(pair: HalfPair, k = 5): void {
  for (let i = 0; i < k; i++, n++) pair.propose(0, 'kv', n % 11 === 10 ? del(`k${n - 7}`) : set(`k${n % 300 === 0 ? 1 : n}`, `v${n}`));
  pair.collapse(0);
}

const state = (p: HalfPair) => [...p.registers.values()].map((r) => [r.name, r.version, r.hash.hi, r.hash.lo]);
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));
const snapVersion = (dir: string): number =>
  decodePairSnapshotHead(readFileSync(join(dir, 'kv', 'snapshot')), (...p) => cryptoHash('SHA256', ...p)).head.version;
const parts = (dir: string): string[] => readdirSync(join(dir, 'kv')).filter((f) => f.startsWith(SNAPSHOT_PART));
/** Wait (bounded) until the background job's partial file exists (`present`) or is gone. */
async function partFile(dir: string, present: boolean): Promise<void> {
  for (let i = 0; i < 5000 && parts(dir).length > 0 !== present; i++) await new Promise((r) => setTimeout(r, 1));
  expect(parts(dir).length > 0).toBe(present);
}

/** Close `t`'s store and load `dir` again: the same registers at the same versions and hashes. */
function stopAndReload(t: ReturnType<typeof open>, dir: string): void {
  const before = state(t.pair);
  t.store.close();
  const b = open(dir);
  expect(state(b.pair)).toEqual(before);
  b.store.close();
}

/** Commit until the store starts a background snapshot of kv; the version it holds. */
function commitUntilBackground(t: ReturnType<typeof open>): number {
  for (let i = 0; i < 10_000 && !t.store.snapshotting('kv'); i++) commit(t.pair);
  expect(t.store.snapshotting('kv')).toBeDefined();
  return t.kv.version;
}

/** 40,000 keys on kv: a snapshot of several slices. */
function fill(t: ReturnType<typeof open>): void {
  for (let i = 0; i < 40; i++) {
    for (let j = 0; j < 1000; j++) t.pair.propose(0, 'kv', set(`key-${i}-${j}`, `value-${i}-${j}-${'x'.repeat(i % 7)}`));
    t.pair.collapse(0);
  }
}

describe('background snapshot (snapshot-job.ts)', () => {
  it('writes byte for byte the snapshot written at once, when nothing is written meanwhile', async () => {
    const dir = tmp();
    const t = open(dir, 1 << 30);
    fill(t);
    const expected = encodeRegisterSnapshot(t.kv);
    const job = new SnapshotJob(pinRegister(t.kv), join(dir, 'kv'), join(dir, 'bg-snapshot'));
    expect(await job.done).toBe(expected.length);
    expect(Buffer.compare(readFileSync(join(dir, 'bg-snapshot')), Buffer.from(expected))).toBe(0);
    t.store.close();
  });

  it('holds the state at its version while the map changes under it over many slices (buckets written early, out of order)', async () => {
    const dir = tmp();
    const t = open(dir, 1 << 30);
    fill(t);
    const expected = encodeRegisterSnapshot(t.kv);
    const at = { version: t.kv.version, hash: { ...t.kv.hash }, size: t.kv.state.size() };
    expect(expected.length).toBeGreaterThan(3 * SNAPSHOT_SLICE); // several slices, with turns between them
    const snap = join(dir, 'bg-snapshot');
    const job = new SnapshotJob(pinRegister(t.kv), join(dir, 'kv'), snap);
    let done = false;
    void job.done.then(() => (done = true));
    // Overwrites and deletes of pinned keys, and enough new keys that the table doubles (slots move).
    for (let round = 0; !done; round++) {
      expect(round).toBeLessThan(10_000);
      for (let j = 0; j < 200; j++) {
        const k = (round * 200 + j) % 40_000;
        t.pair.propose(0, 'kv', j % 5 === 0 ? del(`key-${k % 40}-${k % 1000}`) : set(`key-${k % 40}-${k % 1000}`, `changed-${round}`));
        t.pair.propose(0, 'kv', set(`new-${round}-${j}`, 'n'.repeat(j % 50)));
      }
      t.pair.collapse(0);
      await turn();
    }
    expect(await job.done).toBe(expected.length); // the same entries, in another order
    const loaded = open(tmp()).kv;
    restoreRegisterSnapshot(loaded, readFileSync(snap), snap); // checks the entries hash to the head's hash
    expect({ version: loaded.version, hash: { ...loaded.hash }, size: loaded.state.size() }).toEqual(at);
    expect(Buffer.compare(readFileSync(snap), Buffer.from(expected))).not.toBe(0); // written early: the order moved
    expect(parts(dir)).toEqual([]);
    t.store.close();
  });

  it('writes a stream register as of its length at the start, while appends go on', async () => {
    const dir = tmp();
    const t = open(dir, 1 << 30);
    const s = t.pair.register('s');
    const size = () => (s.state as StreamState).size();
    for (let i = 0; i < 12; i++) {
      t.pair.propose(0, 's', append(size(), String.fromCharCode(97 + i).repeat(250_000)));
      t.pair.collapse(0);
    }
    const expected = encodeRegisterSnapshot(s);
    const job = new SnapshotJob(pinRegister(s), join(dir, 's'), join(dir, 'bg-stream'));
    let done = false;
    void job.done.then(() => (done = true));
    while (!done) {
      t.pair.propose(0, 's', append(size(), 'z'.repeat(100_000)));
      t.pair.collapse(0);
      await turn();
    }
    expect(Buffer.compare(readFileSync(join(dir, 'bg-stream')), Buffer.from(expected))).toBe(0);
    t.store.close();
  });
});

describe('DiskStore: snapshots in the background', () => {
  it('rotates the log aside, logs meanwhile to a fresh one, drops log.old once the snapshot is durable; a restart loads both', async () => {
    const dir = tmp();
    const t = open(dir);
    const v0 = commitUntilBackground(t);
    const job = t.store.snapshotting('kv')!;
    expect(existsSync(join(dir, 'kv', 'log.old'))).toBe(true);
    expect(statSync(join(dir, 'kv', 'log')).size).toBe(0);
    for (let i = 0; i < 20; i++) commit(t.pair, 1); // past the job's version: into the fresh log
    expect(statSync(join(dir, 'kv', 'log')).size).toBeGreaterThan(0);
    const bytes = await job;
    expect(bytes).toBe(statSync(join(dir, 'kv', 'snapshot')).size);
    expect(existsSync(join(dir, 'kv', 'log.old'))).toBe(false);
    expect(snapVersion(dir)).toBe(v0);
    const before = state(t.pair);
    t.store.close();
    const b = open(dir);
    expect(state(b.pair)).toEqual(before);
    expect(b.reports[0].snapshotVersion).toBe(v0);
    expect(b.reports[0].replayed).toBe(20);
    b.store.close();
  });

  it('a crash mid-snapshot (the files as they were) loses nothing: log.old replayed before the log, a snapshot written at load, the partial file removed', async () => {
    const dir = tmp();
    const t = open(dir);
    const firstJob = commitUntilBackground(t);
    await t.store.snapshotting('kv'); // one whole snapshot first: the crash leaves an older one beside log.old
    t.store.hold();
    const v1 = commitUntilBackground(t);
    expect(v1).toBeGreaterThan(firstJob);
    for (let i = 0; i < 7; i++) commit(t.pair);
    await partFile(dir, true); // the job mid-way
    const crashed = tmp();
    cpSync(dir, crashed, { recursive: true });
    const before = state(t.pair);
    expect(existsSync(join(crashed, 'kv', 'log.old'))).toBe(true);
    const b = open(crashed);
    expect(state(b.pair)).toEqual(before);
    expect(b.reports[0].replayed).toBeGreaterThan(7); // log.old's records and the log's
    expect(existsSync(join(crashed, 'kv', 'log.old'))).toBe(false);
    expect(snapVersion(crashed)).toBe(t.kv.version); // one snapshot at load covers both
    expect(statSync(join(crashed, 'kv', 'log')).size).toBe(0);
    expect(parts(crashed)).toEqual([]);
    b.store.close();
    const c = open(crashed);
    expect(state(c.pair)).toEqual(before);
    c.store.close();
    t.store.release();
    await t.store.snapshotting('kv');
    t.store.close();
  });

  it('a crash after the new snapshot was renamed but before log.old was removed: its records are at or below the snapshot, skipped', async () => {
    const dir = tmp();
    const t = open(dir);
    commitUntilBackground(t);
    for (let i = 0; i < 5; i++) commit(t.pair);
    const logOld = readFileSync(join(dir, 'kv', 'log.old'));
    await t.store.snapshotting('kv');
    const before = state(t.pair);
    t.store.close();
    writeFileSync(join(dir, 'kv', 'log.old'), logOld); // the unlink a power loss undid
    const b = open(dir);
    expect(state(b.pair)).toEqual(before);
    expect(b.reports[0].replayed).toBe(5);
    expect(existsSync(join(dir, 'kv', 'log.old'))).toBe(false);
    b.store.close();
  });

  it('a damaged log.old is refused, naming it, and left as it is (its records cannot be skipped: the log continues from them)', () => {
    const dir = tmp();
    const t = open(dir);
    commitUntilBackground(t);
    commit(t.pair);
    const crashed = tmp();
    cpSync(dir, crashed, { recursive: true });
    t.store.close();
    const logOld = join(crashed, 'kv', 'log.old');
    const buf = readFileSync(logOld);
    buf[buf.length - 3] ^= 0xff; // inside its last record
    writeFileSync(logOld, buf);
    expect(() => open(crashed)).toThrow(/kv.log\.old at byte \d+: damaged record/);
    expect(Buffer.compare(readFileSync(logOld), buf)).toBe(0);
  });

  it('a stop mid-snapshot: the next start folds log.old back and loads the same state', async () => {
    const dir = tmp();
    const t = open(dir);
    t.store.hold();
    commitUntilBackground(t);
    await partFile(dir, true);
    for (let i = 0; i < 3; i++) commit(t.pair);
    const before = state(t.pair);
    t.store.close(); // cancels the job
    t.store.release();
    await partFile(dir, false); // the cancelled job's last write returns and it removes its file
    const b = open(dir);
    expect(state(b.pair)).toEqual(before);
    b.store.close();
  });

  it('a snapshot written at once (a reconciliation replaced the state) during a background one wins, whatever the older job does after', async () => {
    const dir = tmp();
    const t = open(dir);
    t.store.hold();
    commitUntilBackground(t);
    let finished = false;
    void t.store.snapshotting('kv')!.then(() => (finished = true));
    await partFile(dir, true);
    for (let i = 0; i < 4; i++) commit(t.pair);
    t.store.replaced(t.kv);
    const v = t.kv.version;
    expect(existsSync(join(dir, 'kv', 'log.old'))).toBe(false);
    t.store.release();
    await partFile(dir, false); // the cancelled job wound down
    await new Promise((r) => setTimeout(r, 20));
    expect(finished).toBe(false); // cancelled: never reported
    expect(snapVersion(dir)).toBe(v);
    stopAndReload(t, dir);
  });

  it('a background snapshot that fails is reported, loses nothing, and the next one is written at once', async () => {
    const dir = tmp();
    const t = open(dir);
    const failures: StoreError[] = [];
    const failed = new Promise<void>((resolve) => {
      t.store.onSnapshotFailed = (e) => {
        failures.push(e);
        resolve();
      };
    });
    commitUntilBackground(t);
    // The rename over the snapshot fails: a non-empty directory stands in its place.
    const snap = join(dir, 'kv', 'snapshot');
    rmSync(snap, { recursive: true, force: true });
    mkdirSync(snap);
    writeFileSync(join(snap, 'x'), 'in the way');
    await failed;
    expect(failures).toHaveLength(1);
    expect(failures[0]).toBeInstanceOf(StoreError);
    expect(failures[0].message).toMatch(/kv.snapshot: background snapshot at v\d+/);
    expect(existsSync(join(dir, 'kv', 'log.old'))).toBe(true);
    expect(parts(dir)).toEqual([]);
    rmSync(snap, { recursive: true });
    // The next snapshot is written at once: it covers log.old, which goes.
    for (let i = 0; i < 10_000 && existsSync(join(dir, 'kv', 'log.old')); i++) commit(t.pair);
    expect(existsSync(join(dir, 'kv', 'log.old'))).toBe(false);
    expect(t.store.snapshotting('kv')).toBeUndefined();
    stopAndReload(t, dir);
  });

  it('settle() waits for the snapshots under way, at most as long as it is told (a stop then leaves no log.old)', async () => {
    const dir = tmp();
    const t = open(dir);
    t.store.hold();
    commitUntilBackground(t);
    await partFile(dir, true);
    let settled = false;
    await t.store.settle(30).then(() => (settled = true)); // the bound passes: the job is held
    expect(settled).toBe(true);
    expect(t.store.snapshotting('kv')).toBeDefined();
    const waiting = t.store.settle(60_000);
    t.store.release();
    await waiting;
    expect(t.store.snapshotting('kv')).toBeUndefined();
    expect(existsSync(join(dir, 'kv', 'log.old'))).toBe(false);
    t.store.close();
  });

  it('a small register is snapshotted at once, as before (no log.old, no job)', () => {
    const dir = tmp();
    const t = open(dir, 4000, false);
    for (let i = 0; i < 400; i++) commit(t.pair);
    expect(t.store.snapshotting('kv')).toBeUndefined();
    expect(existsSync(join(dir, 'kv', 'snapshot'))).toBe(true);
    expect(existsSync(join(dir, 'kv', 'log.old'))).toBe(false);
    t.store.close();
  });
});

// Crash images (the files as a kill -9 leaves them) at random turns while background snapshots
// run slowly, with cross-register groups and snapshots written at once in between: each image
// loads to exactly the state when it was taken, and again from what that load left.
describe('DiskStore: crash images during background snapshots (seeded)', () => {
  const REGS3 = [
    { name: 'kv', kind: 'map' as const },
    { name: 'kv2', kind: 'map' as const },
    { name: 's', kind: 'stream' as const },
  ];
  let rng = 12345;
  const rand = (k: number): number => {
    rng = (rng * 1103515245 + 12345) & 0x7fffffff;
    return rng % k;
  };
  /** Slices paced by the seed; `atRename` runs after a job's rename, before the store removes log.old. */
  class SlowStore extends DiskStore {
    atRename: (() => void) | undefined;
    protected override snapshotJob(pin: PinnedRegister, dir: string, snap: string): SnapshotJob {
      const j = new SnapshotJob(pin, dir, snap, () => new Promise<void>((r) => (rand(3) === 0 ? setTimeout(r, rand(3)) : setImmediate(r))));
      void j.done.then(() => this.atRename?.());
      return j;
    }
  }
  const open3 = (dir: string) => {
    const store = new SlowStore(dir, 'always', 3000);
    store.backgroundSnapshotBytes = 0;
    const pair = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 77, registers: REGS3, store }, 0);
    for (const r of pair.registers.values()) store.load(r);
    return { store, pair };
  };
  let k = 0;
  function step(pair: HalfPair): void {
    const next = () => pair.register('s').nextAppendOffset;
    for (let i = 1 + rand(6); i > 0; i--, k++) {
      const c = rand(10);
      if (c < 4) pair.propose(0, 'kv', set(`k${rand(500)}`, `v${k}`.repeat(1 + rand(5))));
      else if (c < 5) pair.propose(0, 'kv', del(`k${rand(500)}`));
      else if (c < 8) pair.propose(0, 'kv', cross(['kv', set(`x${rand(300)}`, `c${k}`)], ['kv2', set(`y${rand(300)}`, `c${k}`)]));
      else if (c < 9) pair.propose(0, 'kv2', cross(['kv2', set(`z${rand(300)}`, `d${k}`)], ['s', append(next(), `s${k}`)]));
      else pair.propose(0, 's', append(next(), `t${k}`.repeat(1 + rand(20))));
    }
    pair.collapse(0);
  }

  it('every image loads to the state at the moment it was taken, twice', async () => {
    const dir = tmp();
    const t = open3(dir);
    const images: { dir: string; st: unknown }[] = [];
    const image = (): void => {
      const c = tmp();
      cpSync(dir, c, { recursive: true });
      images.push({ dir: c, st: state(t.pair) });
    };
    t.store.atRename = image;
    for (let round = 0; round < 400; round++) {
      step(t.pair);
      if (rand(4) === 0) await turn();
      if (rand(3) === 0) await new Promise((r) => setTimeout(r, 0));
      if (rand(5) === 0) image();
      if (rand(97) === 0) t.store.replaced(t.pair.register(['kv', 'kv2', 's'][rand(3)])); // a reconciliation mid-job
    }
    t.store.close();
    const withOld = images.filter((im) => ['kv', 'kv2', 's'].some((r) => existsSync(join(im.dir, r, 'log.old')))).length;
    expect(withOld).toBeGreaterThan(10); // the images did catch jobs mid-way
    for (const im of images) {
      for (let again = 0; again < 2; again++) {
        const b = open3(im.dir);
        expect(state(b.pair)).toEqual(im.st);
        b.store.close();
      }
    }
  });

  it('a torn cross-register group at the end of a fresh log beside log.old loads to states the registers had together', async () => {
    const dir = tmp();
    const t = open3(dir);
    const together = new Set<string>();
    const key = (p: HalfPair): string => [...p.registers.values()].map((r) => `${r.version}:${r.hash.hi}:${r.hash.lo}`).join('|');
    together.add(key(t.pair));
    let checked = 0;
    for (let i = 0; i < 200; i++) {
      t.pair.propose(
        0,
        'kv',
        cross(
          ['kv', set(`a${i % 50}`, `x${i}`)],
          ['kv2', set(`b${i % 70}`, `y${i}`)],
          ['s', append(t.pair.register('s').nextAppendOffset, `z${i}`)],
        ),
      );
      t.pair.collapse(0);
      together.add(key(t.pair));
      if (i % 2 === 0) await turn();
      if (i % 5 !== 0 || !['kv', 'kv2', 's'].some((r) => existsSync(join(dir, r, 'log.old')))) continue;
      for (const victim of ['kv', 'kv2', 's']) {
        const c = tmp();
        cpSync(dir, c, { recursive: true });
        const log = join(c, victim, 'log');
        const { records } = readFrames(readFileSync(log), MAX_PAIR_RECORD, (...p) => cryptoHash('SHA256', ...p));
        if (records.length === 0) continue;
        truncateSync(log, records[records.length - 1].offset + 3); // its last record torn
        const b = open3(c);
        expect(together.has(key(b.pair))).toBe(true);
        b.store.close();
        checked++;
      }
    }
    expect(checked).toBeGreaterThan(20);
    t.store.close();
  });
});

describe('a batch that replaces a register (PROTOCOL.md rev 1.26)', () => {
  it("writes the register's new snapshot in the background, a slice at a time: nothing of the batch lands before it is durable whole, and a crash mid-way leaves the state before the batch", async () => {
    const dir = tmp();
    const a = open(dir, 1 << 30, false);
    commit(a.pair);
    const before = state(a.pair);
    // The sequencer's kv, ~1 MB: several slices (SNAPSHOT_SLICE).
    const seq = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 77, registers: REGS }, 0);
    for (let i = 0; i < 80; i++) {
      for (let j = 0; j < 500; j++) seq.propose(0, 'kv', set(`key-${i}-${j}`, 'v'.repeat(12)));
      seq.collapse(0);
    }
    const image = seq.registers.get('kv')!;
    expect(encodeRegisterSnapshot(image).length).toBeGreaterThan(3 * SNAPSHOT_SLICE);
    a.store.hold();
    const fds = a.store.write([{ kind: 'replaced', image, version: image.version }]);
    expect(a.store.staging).toBe(true);
    let synced = false;
    const sync = a.store.syncAll(fds).then(() => (synced = true));
    await partFile(dir, true); // the job is under way, held before a slice: the event loop runs
    expect([synced, existsSync(join(dir, 'kv', 'snapshot.next'))]).toEqual([false, false]);
    // A crash now: the state before the batch.
    const crashed = tmp();
    cpSync(dir, crashed, { recursive: true });
    const c = open(crashed);
    expect(state(c.pair)).toEqual(before);
    expect(parts(crashed)).toEqual([]);
    c.store.close();
    a.store.release();
    await sync;
    expect(existsSync(join(dir, 'kv', 'snapshot.next'))).toBe(true);
    a.store.batchDurable();
    expect(existsSync(join(dir, 'kv', 'snapshot.next'))).toBe(false);
    a.store.close();
    const b = open(dir);
    expect([b.kv.version, b.kv.hash]).toEqual([image.version, image.hash]);
    b.store.close();
  });
});
