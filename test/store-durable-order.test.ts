/**
 * DiskStore.load(): the log that decided own candidates is durable before the pending list is
 * rewritten without them (the rule compactPending keeps). A crash is modelled by closing the
 * store's descriptors unflushed, a power loss by putting back, for the log, the bytes it held
 * at its last fsync (what was only in the page cache is gone).
 */
import { describe, expect, it } from 'vitest';
import { closeSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { HalfPair } from '../core/pair/halfpair.js';
import { DiskStore } from '../drivers/store/store.js';
import type { MapState } from '../core/register/map.js';
import { enc, ownSeqs, set, tempDirs } from './helpers.js';

const tmp = tempDirs('spook-durable-order');
const KV = [{ name: 'kv', kind: 'map' as const }];

function open(dir: string, store: DiskStore = new DiskStore(dir, 'always')) {
  const pair = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 77, registers: KV, writes: 'driver' }, 0);
  for (const r of pair.registers.values()) store.load(r);
  return { store, pair };
}

/** Leave a store as kill -9 would: descriptors gone, nothing flushed, nothing more written. */
function kill(store: DiskStore): void {
  const files = (store as unknown as { files: Map<string, { logFd: number; pendingFd: number; leaseFd: number }> }).files;
  for (const f of files.values()) for (const fd of [f.logFd, f.pendingFd, f.leaseFd]) closeSync(fd);
  files.clear();
  (store as unknown as { closed: boolean }).closed = true;
}

/** A store whose first fsync(2) through the seam is a power loss: the process ends there. */
class PowerLossAtSync extends DiskStore {
  protected syncFd(): void {
    throw new Error('power lost (injected at fsync)');
  }
}

describe('DiskStore.load(): the pending list is rewritten only once the log that decided it is durable', () => {
  it("a sequencer's own candidate reported pending survives: killed before its deciding batch's fsync, power lost at the restart's first fsync", () => {
    const dir = tmp();
    const a = open(dir);
    const id = a.pair.propose(0, 'kv', set('k', 'v'));
    // An admin `set` that timed out: secureOwn records it; its proposer is told `pending` once that batch is durable.
    a.pair.secureOwn(0, 'kv', id.seq);
    a.store.persist(a.pair.pollWrites());
    a.pair.writesDurable();
    expect(ownSeqs(a.pair, 'kv')).toEqual([id.seq]);
    const logAtLastFsync = readFileSync(join(dir, 'kv', 'log'));
    const pendingAtLastFsync = readFileSync(join(dir, 'kv', 'pending'));
    expect(pendingAtLastFsync.length).toBeGreaterThan(0);
    // The next collapse decides it: its batch is written (page cache) and the process killed before the batch's fsync.
    a.pair.collapse(0);
    const w = a.pair.pollWrites();
    expect(w.some((x) => x.kind === 'append')).toBe(true);
    a.store.write(w);
    kill(a.store);

    // The restart reads the collapse from the page cache; power is lost at its first fsync.
    expect(() => open(dir, new PowerLossAtSync(dir, 'always'))).toThrow(/power lost/);
    writeFileSync(join(dir, 'kv', 'log'), logAtLastFsync); // the log's unsynced bytes are gone
    // Nothing durable dropped the candidate from `pending` before the log was.
    expect(readFileSync(join(dir, 'kv', 'pending'))).toEqual(pendingAtLastFsync);

    const c = open(dir);
    expect((c.pair.register('kv').state as MapState).get(enc('k'))).toBeUndefined();
    expect(ownSeqs(c.pair, 'kv')).toEqual([id.seq]); // still pending, proposed again
    c.pair.collapse(0);
    c.store.persist(c.pair.pollWrites());
    c.pair.writesDurable();
    expect((c.pair.register('kv').state as MapState).get(enc('k'))?.value).toEqual(enc('v')); // and decided
    c.store.close();
  });

  it('the same restart without a power loss drops the decided candidate from pending, its collapse kept', () => {
    const dir = tmp();
    const a = open(dir);
    const id = a.pair.propose(0, 'kv', set('k', 'v'));
    a.pair.secureOwn(0, 'kv', id.seq);
    a.store.persist(a.pair.pollWrites());
    a.pair.writesDurable();
    a.pair.collapse(0);
    a.store.write(a.pair.pollWrites());
    kill(a.store);
    const b = open(dir);
    expect((b.pair.register('kv').state as MapState).get(enc('k'))?.value).toEqual(enc('v'));
    expect(ownSeqs(b.pair, 'kv')).toEqual([]);
    expect(readFileSync(join(dir, 'kv', 'pending')).length).toBe(0);
    b.store.close();
  });
});
