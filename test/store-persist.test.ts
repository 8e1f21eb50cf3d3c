import { describe, expect, it, vi } from 'vitest';
import { closeSync } from 'node:fs';
import { HalfPair } from '../core/pair/halfpair.js';
import { DiskStore, StoreError } from '../drivers/store/store.js';
import type { MapState } from '../core/register/map.js';
import { enc, ownSeqs, set, tempDirs } from './helpers.js';

const tmp = tempDirs('spook-persist');

const KV = [{ name: 'kv', kind: 'map' as const }];

/** A pair that hands its writes to the driver (as in spookd), over a store in `dir`, loaded from it. */
function open(dir: string, localId = 1) {
  const store = new DiskStore(dir, 'always');
  const pair = new HalfPair({ pairId: 1, localId, peerId: 3 - localId, seed: 77, registers: KV, writes: 'driver' }, 0);
  for (const r of pair.registers.values()) store.load(r);
  return { store, pair };
}

// DiskStore.persist: the driver's batch of pair writes (several steps), written then fsynced once per file.
describe('DiskStore.persist', () => {
  it("a batch of several steps' writes (lease, collapses) survives a restart", () => {
    const dir = tmp();
    const a = open(dir);
    for (let i = 0; i < 20; i++) {
      a.pair.propose(0, 'kv', set(`k${i}`, `v${i}`));
      a.pair.collapse(0);
    }
    const writes = a.pair.pollWrites();
    expect(writes.filter((w) => w.kind === 'append')).toHaveLength(20);
    a.store.persist(writes);
    a.pair.writesDurable();
    const v = a.pair.register('kv').version;
    a.store.close();
    const b = open(dir);
    expect(b.pair.register('kv').version).toBe(v);
    expect(Buffer.from((b.pair.register('kv').state as MapState).get(enc('k19'))!.value).toString()).toBe('v19');
    expect(b.pair.propose(0, 'kv', set('x', 'y')).seq).toBeGreaterThan(20);
  });

  it("a follower's own candidates in one batch are proposed again after a restart", () => {
    const dir = tmp();
    const a = open(dir, 2);
    a.pair.propose(0, 'kv', set('p', '1'));
    a.pair.propose(0, 'kv', set('q', '2'));
    a.store.persist(a.pair.pollWrites());
    a.pair.writesDurable();
    a.store.close();
    const b = open(dir, 2);
    expect(ownSeqs(b.pair, 'kv')).toEqual([1, 2]);
  });

  it('a write that fails throws StoreError naming the file (the caller fences the pair); so does a write after close', () => {
    const dir = tmp();
    const a = open(dir);
    a.pair.propose(0, 'kv', set('a', '1'));
    a.pair.collapse(0);
    // The log's descriptor closed under the store: its next write fails (EBADF), as on EIO.
    closeSync((a.store as unknown as { files: Map<string, { logFd: number }> }).files.get('kv')!.logFd);
    expect(() => a.store.persist(a.pair.pollWrites())).toThrow(StoreError);
    const s = new DiskStore(tmp(), 'always');
    s.close();
    expect(() => s.persist([{ kind: 'lease', register: 'kv', upTo: 1 }])).toThrow(/closed/);
  });
});

/** A store whose fsync(2) fails once `failing` is set (as on EIO), from the one seam DiskStore has for it. */
class FailingFsyncStore extends DiskStore {
  failing = false;
  protected syncFd(fd: number): void {
    if (this.failing) throw new Error('EIO: i/o error, fsync (injected)');
    super.syncFd(fd);
  }
}

describe('DiskStore: the background flush of fsync everysec', () => {
  it('a failing background fsync is reported to the owner once (never thrown from the timer); later writes throw', async () => {
    vi.useFakeTimers();
    try {
      const dir = tmp();
      const reported: Error[] = [];
      const store = new FailingFsyncStore(dir, 'everysec', undefined, undefined, (e) => reported.push(e));
      const pair = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 77, registers: KV, writes: 'driver' }, 0);
      for (const r of pair.registers.values()) store.load(r);
      pair.propose(0, 'kv', set('k', 'v'));
      pair.collapse(0);
      store.persist(pair.pollWrites()); // written, its fsync left to the timer
      pair.writesDurable();
      store.failing = true;
      vi.advanceTimersByTime(3500); // three flushes due: one report
      expect(reported).toHaveLength(1);
      expect(reported[0]).toBeInstanceOf(StoreError);
      expect(reported[0].message).toMatch(/kv: fsync: EIO/);
      pair.propose(0, 'kv', set('k2', 'v'));
      pair.collapse(0);
      expect(() => store.persist(pair.pollWrites())).toThrow(/after a failed write or flush/);
      store.close(); // no second flush, no throw: the failure is reported already
    } finally {
      vi.useRealTimers();
    }
  });

  it('close() whose final flush fails still closes every file, then throws StoreError', () => {
    const dir = tmp();
    const store = new FailingFsyncStore(dir, 'everysec', undefined, undefined, () => {});
    const pair = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 77, registers: KV, writes: 'driver' }, 0);
    for (const r of pair.registers.values()) store.load(r);
    pair.propose(0, 'kv', set('k', 'v'));
    pair.collapse(0);
    store.persist(pair.pollWrites());
    const fds = [...(store as unknown as { files: Map<string, { logFd: number; pendingFd: number }> }).files.values()].flatMap((f) => [
      f.logFd,
      f.pendingFd,
    ]);
    store.failing = true;
    expect(() => store.close()).toThrow(StoreError);
    for (const fd of fds) expect(() => closeSync(fd)).toThrow(/EBADF/);
    expect(() => store.close()).not.toThrow(); // closed once
  });
});
