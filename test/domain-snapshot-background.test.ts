import { afterEach, describe, expect, it } from 'vitest';
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileDomainStore, type SnapshotReport } from '../drivers/store/domain-store.js';
import { BackgroundSnapshot, SNAPSHOT_PART } from '../drivers/store/snapshot-job.js';
import { DomainNode } from '../core/qn/node.js';
import { driveReady } from '../core/qn/persist.js';
import { DomainState, encodeCandidate, type CandidateOp } from '../core/qn/state.js';
import { SNAPSHOT_SLICE, type PinnedSnapshot } from '../core/register/slices.js';
import type { MapState } from '../core/register/map.js';
import { hash } from '../crypto/primitives.js';
import { Writer } from '../wire/buffer.js';
import { DeltaOp } from '../wire/delta.js';
import { DOMAIN_SNAPSHOT_MAGIC_V1, decodeDomainSnapshot } from '../wire/journal.js';
import { DOMAIN_SIM_DEFAULTS, runDomainSeeds } from '../testing/sim/domain.js';

// A domain's log-compacting snapshot is written in the background (issue 16: written at once, a
// 230 MB domain held the event loop ~5 s). What it writes, that the log is compacted only once it
// is durable, and that no crash, install or failure mid-way loses an entry.
const dirs: string[] = [];
const tmp = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'spook-qnbg-'));
  dirs.push(d);
  return d;
};
/** Stores opened by solo(): a job cancelled by close() may still be removing its partial file. */
const opened: FileDomainStore[] = [];
afterEach(async () => {
  await Promise.all(opened.splice(0).map((s) => s.settled()));
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const sha256 = (...p: Uint8Array[]): Uint8Array => hash('SHA256', ...p);

const REGISTERS = [
  { name: 'kv', kind: 'map' as const },
  { name: 'log', kind: 'stream' as const },
];
const GROUPS = [{ name: 'g', registers: ['kv', 'log'] }];

/** A state with `n` keys of 100 bytes, a stream of `streamBytes`, a group and outcomes from two origins. */
function filled(n: number, streamBytes: number): DomainState {
  const st = new DomainState(7, REGISTERS, GROUPS);
  let index = 0;
  const apply = (origin: number, ops: CandidateOp[]): void =>
    st.apply({ index: ++index, term: 1, cmd: encodeCandidate({ origin, seq: index, ops }) });
  for (let i = 0; i < n; i++)
    apply(1 + (i % 2), [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc(`key-${i}`), value: new Uint8Array(100).fill(i) } }]);
  for (let at = 0; at < streamBytes; at += 60_000)
    apply(1, [
      { register: 'log', delta: { op: DeltaOp.Append, offset: at, data: new Uint8Array(Math.min(60_000, streamBytes - at)).fill(at) } },
    ]);
  return st;
}

/** Everything a pin encodes, one slice at a time; `between` runs after each slice (writes meanwhile). */
function drain(p: PinnedSnapshot, between: () => void = () => undefined): { data: Uint8Array; slices: number } {
  const parts: Uint8Array[] = [];
  let slices = 0;
  for (let more = true; more;) {
    const w = new Writer(1 << 12);
    more = p.slices(w);
    parts.push(w.finish());
    slices++;
    between();
  }
  return { data: Buffer.concat(parts), slices };
}

/** A fresh state restored from `data` at `index` (or undefined if it does not restore), and its digest. */
function restored(data: Uint8Array, index: number, seed = 7): ReturnType<DomainState['digest']> | undefined {
  const s = new DomainState(seed, REGISTERS, GROUPS);
  return s.restore(data, index) ? s.digest() : undefined;
}

describe('DomainState.pin (core/qn/state.ts)', () => {
  it('encodes byte for byte what snapshot() encodes, over many slices, when nothing is applied meanwhile', () => {
    const st = filled(8000, 3 * SNAPSHOT_SLICE + 1234);
    const { data, slices } = drain(st.pin());
    expect(slices).toBeGreaterThan(5);
    expect(Buffer.from(data).equals(Buffer.from(st.snapshot()))).toBe(true);
  });

  it('holds the state at its index while entries are applied between its slices (overwrites, deletes, new keys, appends)', () => {
    const st = filled(8000, 2 * SNAPSHOT_SLICE);
    const at = st.index;
    const want = st.digest();
    const pinned = st.pin();
    let index = at;
    let i = 0;
    const { data, slices } = drain(pinned, () => {
      // A burst over the whole key range each slice: most buckets are written before the pin reads them.
      for (let j = 0; j < 700; j++, i++) {
        const ops: CandidateOp[] =
          i % 7 === 0
            ? [{ register: 'kv', delta: { op: DeltaOp.Del, key: enc(`key-${(i * 13) % 8000}`) } }]
            : i % 5 === 0
              ? [
                  {
                    register: 'log',
                    delta: { op: DeltaOp.Append, offset: (st.registers.get('log')!.state as { size(): number }).size(), data: enc('more') },
                  },
                ]
              : [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc(`key-${(i * 31) % 9000}`), value: enc(`v${i}`) } }];
        st.apply({ index: ++index, term: 1, cmd: encodeCandidate({ origin: 3, seq: index, ops }) });
      }
    });
    expect(slices).toBeGreaterThan(3);
    expect(index - at).toBeGreaterThan(2000);
    expect(st.digest()).not.toEqual(want); // the live state did move on
    expect(restored(data, at)).toEqual(want);
  });

  it('each call appends about one slice whatever the writer holds: drained into one writer never reset, it ends, with the same bytes', () => {
    const st = filled(8000, 3 * SNAPSHOT_SLICE);
    const p = st.pin();
    const w = new Writer(1 << 12);
    let calls = 0;
    while (p.slices(w)) if (++calls > 100) throw new Error('no progress');
    expect(calls).toBeGreaterThan(4);
    expect(Buffer.from(w.finish()).equals(Buffer.from(st.snapshot()))).toBe(true);
  });

  it('release() lets go: later writes copy nothing for it, and the live state is untouched', () => {
    const st = filled(3000, 0);
    const p = st.pin();
    p.release();
    const kv = st.registers.get('kv')!.state as MapState;
    kv.apply({ op: DeltaOp.Set, key: enc('key-1'), value: enc('x') }, 99_999);
    expect(new TextDecoder().decode(kv.get(enc('key-1'))!.value)).toBe('x');
  });
});

/** A store whose background snapshots can be held before their next slice, or made to fail there. */
class HeldStore extends FileDomainStore {
  held = false;
  fail = false;
  private readonly waiting: (() => void)[] = [];
  release(): void {
    this.held = false;
    for (const go of this.waiting.splice(0)) go();
  }
  protected override backgroundSnapshot(head: Writer, pinned: PinnedSnapshot): BackgroundSnapshot {
    return new BackgroundSnapshot(head, pinned, this.dir, join(this.dir, 'snapshot'), async () => {
      if (this.fail) throw new Error('ENOSPC: no space left on device, write (injected)');
      if (this.held) await new Promise<void>((go) => this.waiting.push(go));
    });
  }
}

const SEED = 3;

interface Member {
  node: DomainNode;
  disk: HeldStore;
  reports: SnapshotReport[];
}

const sync = (m: { node: DomainNode; disk: FileDomainStore }): void =>
  void driveReady(
    m.node,
    m.disk,
    () => {},
    () => {},
  );

/** A single-member domain (it leads itself: a proposal commits at once) whose store reports to its node as DomainHost wires it. */
function solo(dir: string, maxLogEntries = 16, prepare: (d: HeldStore) => void = () => undefined): Member {
  const reports: SnapshotReport[] = [];
  const m = { reports } as Member;
  m.disk = new HeldStore(
    dir,
    'always',
    (e) => {
      throw e;
    },
    (r) => {
      reports.push(r);
      if (r.ok) m.node.snapshotDurable(r.meta, () => m.disk.readSnapshot(r.meta.index));
      else m.node.snapshotFailed(r.meta.index);
      sync(m);
    },
  );
  prepare(m.disk);
  opened.push(m.disk);
  m.node = new DomainNode(
    {
      domain: 1,
      name: 'd',
      id: 1,
      members: [1],
      links: [],
      registers: REGISTERS,
      groups: GROUPS,
      seed: SEED,
      stored: m.disk.load(),
      random: (a) => a,
      electionMs: 100,
      heartbeatMs: 20,
      maxLogEntries,
      backgroundSnapshots: true,
    },
    0,
  );
  m.node.handleTimeout(500); // elects itself
  sync(m);
  return m;
}
const put = (m: Member, k: string, v: string): void => {
  m.node.propose(1000, [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc(k), value: enc(v) } }]);
  m.node.handleTimeout(1000);
  sync(m);
};
const until = async (cond: () => boolean, ms = 5000): Promise<void> => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out');
    await new Promise((r) => setTimeout(r, 5));
  }
};
const snapshotFile = (dir: string) => decodeDomainSnapshot(readFileSync(join(dir, 'snapshot')), sha256);

describe('background domain snapshots (drivers/store/domain-store.ts)', () => {
  it('the log is compacted only once the snapshot is durable; the file holds the state at its index; a restart loads it', async () => {
    const dir = tmp();
    const m = solo(dir, 16, (d) => (d.held = true));
    let atAsk: ReturnType<DomainState['digest']> | undefined;
    for (let i = 0; i < 40; i++) {
      put(m, `k${i % 30}`, `v${i}`);
      if (m.disk.snapshotting && !atAsk) atAsk = m.node.state.digest(); // the step that asked for it
    }
    const asked = m.disk.snapshotting;
    expect(asked).toBeGreaterThan(16);
    // Held mid-way: no snapshot yet, and every entry still in the log and the journal.
    expect(m.node.raft.snapshotIndex).toBe(0);
    expect(m.disk.load().entries).toHaveLength(m.node.raft.lastIndex);
    m.disk.release();
    await until(() => m.reports.length === 1);
    expect(m.reports[0]).toMatchObject({ ok: true, meta: { index: asked } });
    expect(m.node.raft.snapshotIndex).toBe(asked);
    expect(m.disk.snapshotting).toBe(0);
    // Compacted behind it (half the bound kept for catch-up), and the journal rewritten so.
    expect(m.disk.load().base).toBe(asked - 8);
    const file = snapshotFile(dir);
    expect(file.index).toBe(asked);
    expect(atAsk!.index).toBe(asked);
    expect(restored(file.data, asked, SEED)).toEqual(atAsk);
    expect(readdirSync(dir).filter((f) => f.startsWith(SNAPSHOT_PART))).toEqual([]);
    // load() on the same store reads the file back (the image keeps no copy of its bytes).
    expect(m.disk.load().snapshot).toMatchObject({ index: asked });
    expect(Buffer.from(m.disk.load().snapshot!.data).equals(Buffer.from(file.data))).toBe(true);
    for (let i = 40; i < 50; i++) put(m, `k${i % 30}`, `v${i}`);
    m.disk.close();
    const again = solo(dir, 1000);
    expect({ ...again.node.state.digest(), index: 0 }).toEqual({ ...m.node.state.digest(), index: 0 }); // it elected itself again: one more entry
    again.disk.close();
  });

  it('a crash image taken mid-way loads to the state of that moment; the partial file is removed', async () => {
    const dir = tmp();
    const m = solo(dir, 16, (d) => (d.held = true));
    for (let i = 0; i < 40; i++) put(m, `k${i}`, `v${i}`);
    await until(() => readdirSync(dir).some((f) => f.startsWith(SNAPSHOT_PART)));
    const image = tmp();
    cpSync(dir, image, { recursive: true });
    const digest = m.node.state.digest();
    m.disk.release();
    await until(() => m.reports.length === 1);
    m.disk.close();
    expect(readdirSync(image).filter((f) => f.startsWith(SNAPSHOT_PART))).toHaveLength(1);
    new FileDomainStore(image, 'always').close();
    expect(readdirSync(image).filter((f) => f.startsWith(SNAPSHOT_PART))).toEqual([]);
    expect(existsSync(join(image, 'snapshot'))).toBe(false);
    const b = solo(image, 16);
    expect({ ...b.node.state.digest(), index: 0 }).toEqual({ ...digest, index: 0 });
    expect(b.node.raft.applied).toBe(digest.index + 1);
    b.disk.close();
  });

  it('a stop mid-way loses nothing: the job is cancelled and the journal still covers it', async () => {
    const dir = tmp();
    const m = solo(dir, 16, (d) => (d.held = true));
    for (let i = 0; i < 40; i++) put(m, `k${i}`, `v${i}`);
    expect(m.disk.snapshotting).toBeGreaterThan(0);
    m.disk.close();
    m.disk.release();
    await m.disk.settled();
    expect(m.reports).toEqual([]); // a cancelled job never reports
    expect(readdirSync(dir).filter((f) => f.startsWith(SNAPSHOT_PART))).toEqual([]); // it removed its partial file
    expect(existsSync(join(dir, 'snapshot'))).toBe(false);
    const b = solo(dir, 16);
    expect({ ...b.node.state.digest(), index: 0 }).toEqual({ ...m.node.state.digest(), index: 0 });
    expect(b.node.raft.applied).toBe(m.node.raft.applied + 1);
    b.disk.close();
  });

  it('an install supersedes a job under way: the older file never replaces it, and Raft ignores a stale report', async () => {
    const dir = tmp();
    const m = solo(dir, 16, (d) => (d.held = true));
    for (let i = 0; i < 40; i++) put(m, `k${i}`, `v${i}`);
    const asked = m.disk.snapshotting;
    // A snapshot from a leader far ahead, written at once (what installSnapshot hands the store).
    const leader = filled(50, 0);
    const data = leader.snapshot();
    m.disk.persist([
      { kind: 'snapshot', meta: { index: leader.index, term: 5, members: [1] }, data },
      { kind: 'compact', base: leader.index, baseTerm: 5, reset: true },
    ]);
    expect(m.disk.snapshotting).toBe(0);
    m.disk.release();
    await m.disk.settled(); // the cancelled job has ended: it renamed nothing
    expect(m.reports).toEqual([]);
    expect(snapshotFile(dir).index).toBe(leader.index);
    expect(readdirSync(dir).filter((f) => f.startsWith(SNAPSHOT_PART))).toEqual([]);
    // Raft takes only the report of the snapshot it asked for.
    expect(m.node.raft.snapshotDurable({ index: asked + 1, term: 1, members: [1] }, new Uint8Array(0))).toBe(false);
    expect(m.node.raft.snapshotIndex).toBe(0);
    m.disk.close();
  });

  it('a failed job is reported, compacts nothing, and the next snapshot is written at once', async () => {
    const dir = tmp();
    const m = solo(dir, 16, (d) => (d.fail = true));
    for (let i = 0; i < 20; i++) put(m, `k${i}`, `v${i}`);
    await until(() => m.reports.length === 1);
    expect(m.reports[0].ok).toBe(false);
    expect(m.reports[0].ok ? '' : m.reports[0].error.message).toMatch(/ENOSPC/);
    expect(m.node.raft.snapshotIndex).toBe(0);
    expect(readdirSync(dir).filter((f) => f.startsWith(SNAPSHOT_PART))).toEqual([]);
    m.disk.fail = false;
    put(m, 'k-next', 'v');
    // Written at once, in that step: no job, a snapshot on disk.
    expect(m.disk.snapshotting).toBe(0);
    expect(m.node.raft.snapshotIndex).toBe(m.node.raft.applied);
    expect(snapshotFile(dir).index).toBe(m.node.raft.applied);
    // And the one after goes to the background again.
    for (let i = 0; i < 20; i++) put(m, `k${i}`, `w${i}`);
    await until(() => m.reports.length === 2);
    expect(m.reports[1].ok).toBe(true);
    m.disk.close();
  });

  it('readSnapshot returns the snapshot file when it holds that index or a later one; undefined when older, or damaged', async () => {
    const dir = tmp();
    const m = solo(dir, 16);
    for (let i = 0; i < 40; i++) put(m, `k${i}`, `v${i}`);
    await until(() => m.reports.length === 1);
    const at = m.node.raft.snapshotIndex;
    const read = m.disk.readSnapshot(at)!;
    expect(read).toMatchObject({ index: at, term: m.node.raft.term, members: [1] });
    expect(restored(read.data, at, SEED)).toBeDefined();
    expect(m.disk.readSnapshot(at - 1)).toMatchObject({ index: at }); // a later one serves as well
    expect(m.disk.readSnapshot(at + 1)).toBeUndefined();
    const buf = readFileSync(join(dir, 'snapshot'));
    buf[buf.length - 40] ^= 1;
    writeFileSync(join(dir, 'snapshot'), buf);
    expect(m.disk.readSnapshot(at)).toBeUndefined();
    m.disk.close();
  });

  it('a snapshot file of the first layout (SPKQSNP1, data length-prefixed) still loads', () => {
    const st = filled(100, 1000);
    const data = st.snapshot();
    const body = new Writer(data.length + 64)
      .bytes(DOMAIN_SNAPSHOT_MAGIC_V1)
      .varint(st.index)
      .varint(2)
      .varint(1)
      .varint(1)
      .lenBytes(data)
      .finish();
    const buf = Buffer.concat([body, sha256(body)]);
    const s = decodeDomainSnapshot(buf, sha256);
    expect(s).toMatchObject({ index: st.index, term: 2, members: [1] });
    expect(restored(s.data, st.index)).toEqual(st.digest());
  });
});

describe('background domain snapshots in the simulator (testing/sim/domain.ts)', () => {
  it('300 seeds, 5 members, every snapshot in the background, with crashes, store faults, partitions and a membership change: each checked against the log, all converge', () => {
    const s = runDomainSeeds(300, 700_001, {
      ...DOMAIN_SIM_DEFAULTS,
      nodes: 5,
      partitions: true,
      crashes: true,
      cuts: true,
      membership: true,
      storeFaults: 0.01,
      maxLogEntries: 16,
      backgroundSnapshots: true,
    });
    expect(s.failures).toEqual([]);
    expect(s.converged).toBe(300);
    // Written, failed (a store fault), and sent to members that fell behind the compacted log.
    expect(s.backgroundWritten).toBeGreaterThan(1000);
    expect(s.backgroundFailed).toBeGreaterThan(0);
    expect(s.snapshots).toBeGreaterThan(50);
  });
});
