import { afterEach, describe, expect, it } from 'vitest';
import { closeSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HalfPair } from '../core/pair/halfpair.js';
import { DiskStore, StoreError } from '../drivers/store/store.js';
import type { MapState } from '../core/register/map.js';
import { enc, set } from './helpers.js';

const dirs: string[] = [];
const tmp = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'spook-persist-'));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

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
    expect(
      b.pair
        .register('kv')
        .ownCandidates()
        .map((c) => c.seq),
    ).toEqual([1, 2]);
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
