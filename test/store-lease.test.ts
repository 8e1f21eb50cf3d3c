import { describe, expect, it, vi } from 'vitest';
import { closeSync, mkdirSync, openSync, readFileSync, readSync, statSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { HalfPair } from '../core/pair/halfpair.js';
import { DiskStore, StoreError } from '../drivers/store/store.js';
import { LEASE_FILE_LEN, LEASE_SLOT_STRIDE, decodeLease, encodeLeaseFile, encodeLeaseSlot } from '../wire/journal.js';
import { ownSeqs, set, tempDirs } from './helpers.js';

/**
 * The lease file in slots (PROTOCOL.md §7.1, §10.1, rev 1.22): a lease is written in place, in
 * the slot that does not hold the last durable one, and fsynced with its batch (off the event
 * loop under fsync "always") instead of an atomic rewrite before it. A crash may then keep the
 * batch's log or pending records without its lease: the restart still continues above every
 * number used.
 */
const sha256 = (...parts: Uint8Array[]): Uint8Array => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p);
  return h.digest();
};
const tmp = tempDirs('spook-lease');

const KV = [{ name: 'kv', kind: 'map' as const }];
const leasePath = (dir: string): string => join(dir, 'kv', 'lease');

/** A DiskStore counting its fsyncs of files. */
class CountingStore extends DiskStore {
  syncs = 0;
  protected syncFd(fd: number): void {
    this.syncs++;
    super.syncFd(fd);
  }
}

/** A pair handing its writes to the driver (as in spookd) over a store in `dir`; localId 1 sequences. */
function open(dir: string, localId: 1 | 2) {
  const store = new CountingStore(dir, 'always');
  const pair = new HalfPair({ pairId: 1, localId, peerId: 3 - localId, seed: 77, registers: KV, writes: 'driver' }, 0);
  for (const r of pair.registers.values()) store.load(r);
  return { store, pair };
}

/** Take the pair's writes as spookd does: written, then fsynced (here, at once), then durable. */
function commit(x: ReturnType<typeof open>): number[] {
  const writes = x.pair.pollWrites();
  const fds = x.store.write(writes);
  x.store.syncNow(fds);
  x.store.batchDurable();
  x.pair.writesDurable();
  return fds;
}

describe('the lease file in slots', () => {
  it('codec: the valid slot of the higher lease wins; a torn slot leaves the other; text before rev 1.22 still reads', () => {
    const file = encodeLeaseFile(1024, sha256);
    expect(file.length).toBe(LEASE_FILE_LEN);
    expect(decodeLease(file, sha256)).toEqual({ upTo: 1024, slot: 0 });
    file.set(encodeLeaseSlot(2048, sha256), LEASE_SLOT_STRIDE);
    expect(decodeLease(file, sha256)).toEqual({ upTo: 2048, slot: 1 });
    file[LEASE_SLOT_STRIDE + 9] ^= 1; // torn
    expect(decodeLease(file, sha256)).toEqual({ upTo: 1024, slot: 0 });
    file[3] ^= 1;
    expect(decodeLease(file, sha256)).toBeUndefined();
    expect(decodeLease(encodeLeaseFile(2 ** 53 - 1, sha256), sha256)?.upTo).toBe(2 ** 53 - 1);
    expect(decodeLease(new TextEncoder().encode('3072\n'), sha256)).toEqual({ upTo: 3072, slot: -1 });
    expect(decodeLease(new TextEncoder().encode('30x2\n'), sha256)).toBeUndefined();
    expect(decodeLease(new TextEncoder().encode(''), sha256)).toBeUndefined();
  });

  it('is written in place with its batch: its descriptor is among those to fsync, the file keeps its inode, a restart continues above it', () => {
    const dir = tmp();
    const a = open(dir, 2);
    const ino = statSync(leasePath(dir)).ino;
    a.pair.propose(0, 'kv', set('k', 'v'));
    const writes = a.pair.pollWrites();
    expect(writes.map((w) => w.kind)).toEqual(['lease', 'proposed']);
    const fds = a.store.write(writes);
    expect(fds).toHaveLength(2); // the pending list and the lease, fsynced together by the caller
    a.store.syncNow(fds);
    a.store.batchDurable();
    a.pair.writesDurable();
    expect(statSync(leasePath(dir)).ino).toBe(ino);
    expect(decodeLease(readFileSync(leasePath(dir)), sha256)).toEqual({ upTo: 1024, slot: 1 });
    a.store.close();
    const b = open(dir, 2);
    expect(b.pair.propose(0, 'kv', set('k2', 'v')).seq).toBe(1025);
    commit(b);
    // The next lease went to the other slot: the one holding 1024 stayed whole until then.
    expect(decodeLease(readFileSync(leasePath(dir)), sha256)).toEqual({ upTo: 2048, slot: 0 });
    b.store.close();
  });

  for (const who of ['sequencer', 'follower'] as const) {
    it(`a ${who}: a crash kept the batch's records but not its lease; the restart never reuses a number`, () => {
      const dir = tmp();
      const localId = who === 'sequencer' ? 1 : 2;
      const a = open(dir, localId);
      for (let i = 0; i < 3; i++) {
        a.pair.propose(0, 'kv', set(`k${i}`, 'v'));
        a.pair.collapse(0); // the sequencer decides its own at once; a follower's wait in its pending list
      }
      const before = readFileSync(leasePath(dir)); // 0: no lease yet
      commit(a);
      a.store.close();
      writeFileSync(leasePath(dir), before); // its slot never reached the disk
      const b = open(dir, localId);
      const next = b.pair.propose(0, 'kv', set('after', 'v')).seq;
      expect(next).toBeGreaterThan(3);
      b.store.close();
    });
  }

  it('a load makes durable what it read (a process killed before its fsyncs left it in the page cache only)', () => {
    const dir = tmp();
    const a = open(dir, 2);
    a.pair.propose(0, 'kv', set('k', 'A'));
    a.store.write(a.pair.pollWrites()); // written; killed before the batch's fsyncs
    a.store.close();
    const b = open(dir, 2);
    // It restores candidate 1 and will propose it at once: its pending record and lease first reach the disk.
    expect(ownSeqs(b.pair, 'kv')).toEqual([1]);
    expect(b.store.syncs).toBeGreaterThanOrEqual(3); // log, pending list, lease
    b.store.close();
  });

  it('a pending list rewrite that fails leaves the store its descriptors (close closes only its own)', () => {
    const dir = tmp();
    const a = open(dir, 2);
    // The rewrite is due past 1 MiB and twice what is undecided (rev 1.37): with no peer nothing is
    // decided here, so the register is made to say its undecided candidates take nothing.
    vi.spyOn(a.pair.register('kv'), 'pendingListBytes', 'get').mockReturnValue(0);
    for (let i = 0; i < 800; i++) a.pair.propose(0, 'kv', set(`k${i}`, 'x'.repeat(1500)));
    a.store.syncNow(a.store.write(a.pair.pollWrites())); // past 1 MiB: rewritten at batchDurable
    mkdirSync(join(dir, 'kv', 'pending.tmp')); // the rewrite's open fails (a stand-in for ENOSPC, EIO)
    expect(() => a.store.batchDurable()).toThrow(StoreError);
    writeFileSync(join(dir, 'victim'), 'x');
    const victim = openSync(join(dir, 'victim'), 'r'); // the lowest free number: had the store closed its fd, this one
    try {
      a.store.close();
      expect(readSync(victim, Buffer.alloc(1), 0, 1, 0)).toBe(1); // still open: not closed by the store
    } finally {
      closeSync(victim);
    }
  });

  it('a load refuses a lease file with no valid slot (own numbers could be reused) and names it', () => {
    const dir = tmp();
    const a = open(dir, 2);
    a.pair.propose(0, 'kv', set('k', 'v'));
    commit(a);
    a.store.close();
    writeFileSync(leasePath(dir), new Uint8Array(LEASE_FILE_LEN).fill(7));
    expect(() => open(dir, 2)).toThrow(StoreError);
    expect(() => open(dir, 2)).toThrow(/kv\/lease: no valid lease/);
  });

  it('a lease file in the text form (before rev 1.22) loads and is rewritten in slots', () => {
    const dir = tmp();
    mkdirSync(join(dir, 'kv'), { recursive: true });
    writeFileSync(leasePath(dir), '5120\n');
    const a = open(dir, 2);
    expect(readFileSync(leasePath(dir)).length).toBe(LEASE_FILE_LEN);
    expect(decodeLease(readFileSync(leasePath(dir)), sha256)?.upTo).toBe(5120);
    expect(a.pair.propose(0, 'kv', set('k', 'v')).seq).toBe(5121);
    a.store.close();
  });
});
