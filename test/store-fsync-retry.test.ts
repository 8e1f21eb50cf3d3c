/**
 * A pair store under fsync "everysec" or "never" whose fsync of a log fails once (EIO), then
 * succeeds: PostgreSQL's "fsyncgate". The kernel may have dropped the dirty pages the failed fsync
 * was to write (records already acknowledged: they were written, and a killed process loses
 * nothing), and a retried fsync then succeeds with them lost. So a failure of any of the store's
 * own flushes (the one a snapshot or a pending list's rewrite makes first, as the timer's) marks
 * the store failed: nothing more is written, and its close reports the failure (spookd's stop then
 * exits 74: test/spookd-store-fail.test.ts), never a clean end after a retry that proves nothing.
 */
import { describe, expect, it } from 'vitest';
import { join } from 'node:path';
import { DiskStore, StoreError, type FsyncPolicy } from '../drivers/store/store.js';
import { HalfPair } from '../core/pair/halfpair.js';
import { set, tempDirs } from './helpers.js';

const tmp = tempDirs('spook-fsync-retry');

/** fsync(2) of the next descriptor fails once (EIO), as a disk that lost the pages; a retry succeeds. */
class FsyncGateStore extends DiskStore {
  failNext = false;
  fsyncs = 0;
  protected syncFd(fd: number): void {
    this.fsyncs++;
    if (this.failNext) {
      this.failNext = false;
      throw new Error('EIO: i/o error, fsync (injected)');
    }
    super.syncFd(fd);
  }
}

const opts = { pairId: 1, localId: 1, peerId: 2, seed: 5, registers: [{ name: 'kv', kind: 'map' as const }], writes: 'driver' as const };

function open(dir: string, fsync: FsyncPolicy): { store: FsyncGateStore; pair: HalfPair } {
  // A small log bound: a batch soon makes a snapshot due, written at once once the batch is durable.
  const store = new FsyncGateStore(dir, fsync, 400, undefined, () => undefined);
  store.backgroundSnapshotBytes = Number.MAX_SAFE_INTEGER;
  const pair = new HalfPair(opts, 0);
  for (const r of pair.registers.values()) store.load(r);
  return { store, pair };
}

/** One batch as spookd makes it: written, synced (nothing to fsync under these policies), then its end. */
function batch(t: { store: FsyncGateStore; pair: HalfPair }): void {
  const fds = t.store.write(t.pair.pollWrites());
  t.store.syncNow(fds);
  t.store.batchDurable();
  t.pair.writesDurable();
}

describe('a pair store whose flush fails once (everysec, never)', () => {
  it.each<FsyncPolicy>(['everysec', 'never'])(
    'fsync %s: a failed flush before a snapshot fails the store; a retried fsync is no clean close',
    (fsync) => {
      const t = open(join(tmp(), 'store'), fsync);
      // Acknowledged writes: written to the log, not fsynced yet (the policy allows that).
      t.pair.propose(0, 'kv', set('a', 'x'.repeat(50)));
      t.pair.collapse(0);
      batch(t);
      expect(t.pair.register('kv').version).toBe(1);
      // The batch that makes the log outgrow its bound: its snapshot first fsyncs the log, which fails.
      for (let i = 0; i < 6; i++) t.pair.propose(0, 'kv', set(`k${i}`, 'y'.repeat(80)));
      t.pair.collapse(0);
      t.store.failNext = true;
      expect(() => batch(t)).toThrow(/EIO/);
      // Nothing more is written to it (the retry below would only prove the pages gone)...
      expect(() => t.store.write([])).toThrow(StoreError);

      // ...and its close reports the failure, though an fsync now would succeed.
      expect(() => t.store.close()).toThrow(/EIO/);
    },
  );

  it('a store whose flushes succeed closes cleanly (everysec)', () => {
    const t = open(join(tmp(), 'store'), 'everysec');
    for (let i = 0; i < 8; i++) t.pair.propose(0, 'kv', set(`k${i}`, 'y'.repeat(80)));
    t.pair.collapse(0);
    batch(t);
    expect(() => t.store.close()).not.toThrow();
  });
});
