/**
 * What writing a large register's snapshot costs the event loop (issue 16: at 8.5 × 10^6 keys
 * the hub stopped for ~6 s and dropped thousands of datagrams). One sequencer register of
 * `keys` entries on a DiskStore (fsync always), written to all the while, as a hub is: every
 * millisecond a timer commits `perTick` sets (overwrites of existing keys and new ones). Two
 * snapshots of the same register, same run:
 *  - background (drivers/store/snapshot-job.ts), started by the log outgrowing `maxLogBytes`;
 *  - the baseline, written at once (`DiskStore.replaced`, the path every snapshot took before).
 * For each: the longest the event loop went without running a timer (a probe every millisecond),
 * the snapshot's wall time, the commits made meanwhile, and the memory the pin's copied buckets held.
 *
 * `--replaced`: a pair register replaced by reconciliation (PROTOCOL.md rev 1.26): a batch
 * holding the replacement written, synced and landed as spookd does it (`write`, `syncAll`, the
 * new snapshot written in the background meanwhile, `batchDurable`), beside the baseline of the
 * same batch made durable in one turn (`persist`: what every replacement did before). No writer:
 * the register a replacement lands on waits for it (its records are held).
 *
 * `--domain`: the same for a QN domain's snapshot (one member leading itself, FileDomainStore,
 * fsync always, a map register of `keys` entries): in the background when Raft's log outgrows
 * `maxLogEntries` (drivers/store/domain-store.ts), beside the baseline of the same snapshot
 * encoded and written at once (what Raft's compaction did before: DomainState.snapshot() and a
 * 'snapshot' write).
 */
import { mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HalfPair } from '../core/pair/halfpair.js';
import type { MapState } from '../core/register/map.js';
import { DeltaOp } from '../wire/delta.js';
import { DiskStore, restoreRegisterSnapshot } from '../drivers/store/store.js';
import { decodeDomainSnapshot } from '../wire/journal.js';
import { hash } from '../crypto/primitives.js';
import { FileDomainStore, type SnapshotReport } from '../drivers/store/domain-store.js';
import { DomainNode } from '../core/qn/node.js';
import { driveReady } from '../core/qn/persist.js';
import { DomainState } from '../core/qn/state.js';

export interface SnapshotBenchOptions {
  keys: number;
  /** A QN domain's snapshot instead of a pair register's. */
  domain?: boolean;
  /** A pair register replaced by reconciliation instead of a log snapshot. */
  replaced?: boolean;
  /** Sets committed per millisecond tick while the snapshot is written. */
  perTick: number;
}

export interface SnapshotFigures {
  /** Longest gap between two runs of the 1 ms probe, while the snapshot was written. */
  maxLoopBlockMs: number;
  /** 99th percentile of the probe's gaps over the same window. */
  p99LoopGapMs: number;
  snapshotMs: number;
  snapshotBytes: number;
  /** Sets committed while the snapshot was written. */
  commitsDuring: number;
  /** RSS above the level before the snapshot, at its highest during it (the pin's copied buckets, write buffers). */
  extraRssMb: number;
}

export interface SnapshotBenchResult {
  kind: 'pair register' | 'replaced register' | 'domain';
  keys: number;
  perTick: number;
  background: SnapshotFigures;
  atOnce: SnapshotFigures;
  /** background.maxLoopBlockMs / atOnce.maxLoopBlockMs. */
  loopBlockRatio: number;
  /** Loading the background snapshot's file back into a fresh register, as a restart does (key-hash order: KeyTable.reserveCount). */
  restoreMs: number;
}

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function runSnapshotBench(o: SnapshotBenchOptions): Promise<SnapshotBenchResult> {
  if (o.domain) return runDomainSnapshotBench(o);
  if (o.replaced) return runReplacedBench(o);
  const dir = mkdtempSync(join(tmpdir(), 'spook-bench-snapshot-'));
  try {
    // maxLogBytes 1 MiB: the first background snapshot starts about a second into the writes.
    const store = new DiskStore(dir, 'always', 1 << 20);
    const pair = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 5, registers: [{ name: 'kv', kind: 'map' }], store }, 0);
    const reg = pair.register('kv');
    store.load(reg);
    reg.restore(1, (st) => {
      for (let i = 0; i < o.keys; i++) (st as MapState).put(enc(`key-${i}`), enc(`value-${i}-${'v'.repeat(16)}`), 1);
    });
    let now = 1;
    let commits = 0;
    let n = 0;
    const writer = setInterval(() => {
      for (let i = 0; i < o.perTick; i++) {
        // Three in four overwrite a key the pin holds (its bucket is copied out first), one in four is new.
        const k = n % 4 === 3 ? `new-${n}` : `key-${(n * 2654435761) % o.keys}`;
        pair.propose(now, 'kv', { op: DeltaOp.Set, key: enc(k), value: enc(`w${n}`) });
        n++;
      }
      pair.collapse(now++);
      commits += o.perTick;
      while (pair.pollTransmit(now)) {
        // no peer: only the sequencer's state and its store matter here
      }
    }, 1);
    const probe = loopProbe(() => commits);
    try {
      // The writes fill the log; the commit that takes it past maxLogBytes starts the job (at most 1 ms before the window).
      for (let waited = 0; store.snapshotting('kv') === undefined; waited++) {
        if (waited > 60_000) throw new Error('no background snapshot began within 60 s of writes');
        await sleep(1);
      }
      const background = await probe.window(() => store.snapshotting('kv')!);
      const file = join(dir, 'kv', 'snapshot');
      const buf = readFileSync(file);
      const r0 = performance.now();
      restoreRegisterSnapshot(
        new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 5, registers: [{ name: 'kv', kind: 'map' }] }, 0).register('kv'),
        buf,
        file,
      );
      const restoreMs = Math.round(performance.now() - r0);
      await sleep(500);
      const atOnce = await probe.window(async () => {
        await sleep(1);
        store.replaced(reg); // what every snapshot did before: encode, write, fsync, all in one turn
        return statSync(join(dir, 'kv', 'snapshot')).size;
      });
      return result('pair register', o, background, atOnce, restoreMs);
    } finally {
      clearInterval(writer);
      probe.stop();
      store.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** A register of `keys` entries at version 1, in memory (the state a reconciliation installs). */
function filledRegister(keys: number): HalfPair {
  const src = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 5, registers: [{ name: 'kv', kind: 'map' }] }, 0);
  src.register('kv').restore(1, (st) => {
    for (let i = 0; i < keys; i++) (st as MapState).put(enc(`key-${i}`), enc(`value-${i}-${'v'.repeat(16)}`), 1);
  });
  return src;
}

async function runReplacedBench(o: SnapshotBenchOptions): Promise<SnapshotBenchResult> {
  const dir = mkdtempSync(join(tmpdir(), 'spook-bench-replaced-'));
  const probe = loopProbe(() => 0);
  try {
    const store = new DiskStore(dir, 'always');
    const pair = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 5, registers: [{ name: 'kv', kind: 'map' }], writes: 'driver' }, 0);
    store.load(pair.register('kv'));
    const image = filledRegister(o.keys).registers.get('kv')!;
    const batch = [{ kind: 'replaced' as const, image, version: image.version }];
    const size = (): number => statSync(join(dir, 'kv', 'snapshot')).size;
    const background = await probe.window(async () => {
      await sleep(1);
      const fds = store.write(batch);
      await store.syncAll(fds);
      store.batchDurable();
      return size();
    });
    await sleep(500);
    const atOnce = await probe.window(async () => {
      await sleep(1);
      store.persist(batch);
      return size();
    });
    const file = join(dir, 'kv', 'snapshot');
    const r0 = performance.now();
    restoreRegisterSnapshot(
      new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 5, registers: [{ name: 'kv', kind: 'map' }] }, 0).register('kv'),
      readFileSync(file),
      file,
    );
    const restoreMs = Math.round(performance.now() - r0);
    store.close();
    return result('replaced register', o, background, atOnce, restoreMs);
  } finally {
    probe.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

function result(
  kind: SnapshotBenchResult['kind'],
  o: SnapshotBenchOptions,
  background: SnapshotFigures,
  atOnce: SnapshotFigures,
  restoreMs: number,
): SnapshotBenchResult {
  const loopBlockRatio = Math.round((background.maxLoopBlockMs / Math.max(1, atOnce.maxLoopBlockMs)) * 1000) / 1000;
  return { kind, keys: o.keys, perTick: o.perTick, background, atOnce, loopBlockRatio, restoreMs };
}

/** A probe every millisecond, and the figures of a window in which `run` writes a snapshot (`commits`: the writer's count). */
function loopProbe(commits: () => number): { window: (run: () => Promise<number>) => Promise<SnapshotFigures>; stop: () => void } {
  const gaps: number[] = [];
  let last = performance.now();
  let rssPeak = 0;
  const timer = setInterval(() => {
    const t = performance.now();
    gaps.push(t - last);
    last = t;
    if (gaps.length % 16 === 0) rssPeak = Math.max(rssPeak, process.memoryUsage.rss());
  }, 1);
  const window = async (run: () => Promise<number>): Promise<SnapshotFigures> => {
    gaps.length = 0;
    last = performance.now();
    const rss0 = process.memoryUsage.rss();
    rssPeak = rss0;
    const c0 = commits();
    const t0 = performance.now();
    const bytes = await run();
    const snapshotMs = performance.now() - t0;
    await sleep(5); // the probe sees the gap a snapshot written at once left
    const sorted = [...gaps].sort((a, b) => a - b);
    return {
      maxLoopBlockMs: Math.round(sorted[sorted.length - 1] ?? 0),
      p99LoopGapMs: Math.round((sorted[Math.floor(sorted.length * 0.99)] ?? 0) * 10) / 10,
      snapshotMs: Math.round(snapshotMs),
      snapshotBytes: bytes,
      commitsDuring: commits() - c0,
      extraRssMb: Math.round((Math.max(rssPeak, process.memoryUsage.rss()) - rss0) / 2 ** 20),
    };
  };
  return { window, stop: () => clearInterval(timer) };
}

async function runDomainSnapshotBench(o: SnapshotBenchOptions): Promise<SnapshotBenchResult> {
  const dir = mkdtempSync(join(tmpdir(), 'spook-bench-dsnapshot-'));
  const registers = [{ name: 'kv', kind: 'map' as const, maxKeys: 2 ** 40, maxBytes: 2 ** 46 }];
  let reported: ((r: SnapshotReport) => void) | undefined;
  let node: DomainNode | undefined;
  const store = new FileDomainStore(
    dir,
    'always',
    (e) => {
      throw e;
    },
    (r) => {
      if (r.ok) node?.snapshotDurable(r.meta, () => store.readSnapshot(r.meta.index));
      reported?.(r);
    },
  );
  const drive = (): void => {
    const failed = driveReady(
      node!,
      store,
      () => undefined,
      () => undefined,
    );
    if (failed) throw failed;
  };
  try {
    // The register loaded from a snapshot at index 1, as a member restarting with it would.
    const st = new DomainState(5, registers, []);
    const kv = st.registers.get('kv')!;
    kv.version = 1;
    for (let i = 0; i < o.keys; i++) (kv.state as MapState).put(enc(`key-${i}`), enc(`value-${i}-${'v'.repeat(16)}`), 1);
    st.index = 1;
    store.persist([
      { kind: 'snapshot', meta: { index: 1, term: 1, members: [1] }, data: st.snapshot() },
      { kind: 'compact', base: 1, baseTerm: 1, reset: true },
      { kind: 'commit', index: 1 },
    ]);
    // 20,000 entries: the first background snapshot starts about two seconds into the writes.
    const maxLogEntries = 20_000;
    const opts = { domain: 1, name: 'bench', id: 1, members: [1], links: [], registers, seed: 5, random: (a: number) => a, maxLogEntries };
    node = new DomainNode({ ...opts, stored: store.load(), backgroundSnapshots: true }, 0);
    let now = 1;
    node.handleTimeout(now + 2000); // elects itself
    now += 2001;
    drive();
    let commits = 0;
    let n = 0;
    const writer = setInterval(() => {
      for (let i = 0; i < o.perTick; i++) {
        const k = n % 4 === 3 ? `new-${n}` : `key-${(n * 2654435761) % o.keys}`;
        node!.propose(now, [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc(k), value: enc(`w${n}`) } }]);
        n++;
      }
      node!.handleTimeout(now++);
      drive();
      commits += o.perTick;
    }, 1);
    const probe = loopProbe(() => commits);
    try {
      for (let waited = 0; store.snapshotting === 0; waited++) {
        if (waited > 120_000) throw new Error('no background snapshot began within 120 s of writes');
        await sleep(1);
      }
      const background = await probe.window(async () => {
        const r = await new Promise<SnapshotReport>((res) => (reported = res));
        if (!r.ok) throw r.error;
        return statSync(join(dir, 'snapshot')).size;
      });
      const file = decodeDomainSnapshot(readFileSync(join(dir, 'snapshot')), (...p) => hash('SHA256', ...p));
      const r0 = performance.now();
      if (!new DomainState(5, registers, []).restore(file.data, file.index)) throw new Error('the background snapshot does not restore');
      const restoreMs = Math.round(performance.now() - r0);
      await sleep(500);
      const atOnce = await probe.window(async () => {
        await sleep(1);
        // What Raft's compaction did before: encode the state, then the store writes it (SHA-256, write, fsync, rename).
        const data = node!.state.snapshot();
        store.persist([{ kind: 'snapshot', meta: { index: node!.state.index, term: node!.raft.term, members: [1] }, data }]);
        return statSync(join(dir, 'snapshot')).size;
      });
      return result('domain', o, background, atOnce, restoreMs);
    } finally {
      clearInterval(writer);
      probe.stop();
    }
  } finally {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  }
}
