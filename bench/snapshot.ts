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
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HalfPair } from '../core/pair/halfpair.js';
import type { MapState } from '../core/register/map.js';
import { DeltaOp } from '../wire/delta.js';
import { DiskStore } from '../drivers/store/store.js';

export interface SnapshotBenchOptions {
  keys: number;
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
  keys: number;
  perTick: number;
  background: SnapshotFigures;
  atOnce: SnapshotFigures;
  /** background.maxLoopBlockMs / atOnce.maxLoopBlockMs. */
  loopBlockRatio: number;
}

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function runSnapshotBench(o: SnapshotBenchOptions): Promise<SnapshotBenchResult> {
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
    const gaps: number[] = [];
    let last = performance.now();
    let rssPeak = 0;
    const probe = setInterval(() => {
      const t = performance.now();
      gaps.push(t - last);
      last = t;
      if (gaps.length % 16 === 0) rssPeak = Math.max(rssPeak, process.memoryUsage.rss());
    }, 1);
    /** The figures while `run` writes a snapshot (measured from the call). */
    const window = async (run: () => Promise<number>): Promise<SnapshotFigures> => {
      gaps.length = 0;
      last = performance.now();
      const rss0 = process.memoryUsage.rss();
      rssPeak = rss0;
      const c0 = commits;
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
        commitsDuring: commits - c0,
        extraRssMb: Math.round((Math.max(rssPeak, process.memoryUsage.rss()) - rss0) / 2 ** 20),
      };
    };
    try {
      // The writes fill the log; the commit that takes it past maxLogBytes starts the job (at most 1 ms before the window).
      for (let waited = 0; store.snapshotting('kv') === undefined; waited++) {
        if (waited > 60_000) throw new Error('no background snapshot began within 60 s of writes');
        await sleep(1);
      }
      const background = await window(() => store.snapshotting('kv')!);
      await sleep(500);
      const atOnce = await window(async () => {
        await sleep(1);
        store.replaced(reg); // what every snapshot did before: encode, write, fsync, all in one turn
        return statSync(join(dir, 'kv', 'snapshot')).size;
      });
      return {
        keys: o.keys,
        perTick: o.perTick,
        background,
        atOnce,
        loopBlockRatio: Math.round((background.maxLoopBlockMs / Math.max(1, atOnce.maxLoopBlockMs)) * 1000) / 1000,
      };
    } finally {
      clearInterval(writer);
      clearInterval(probe);
      store.close();
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
