import { afterEach, describe, expect, it, vi } from 'vitest';
import { appendFileSync, closeSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { FileDomainStore } from '../drivers/store/domain-store.js';
import { StoreError } from '../drivers/store/store.js';
import { DomainNode } from '../core/qn/node.js';
import { driveReady } from '../core/qn/persist.js';
import { EntryKind } from '../core/qn/raft.js';
import { DeltaOp } from '../wire/delta.js';
import { soloDomain } from './helpers.js';

const dirs: string[] = [];
const tmp = (): string => {
  const d = mkdtempSync(join(tmpdir(), 'spook-qn-'));
  dirs.push(d);
  return d;
};
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

/** Each Ready's writes to the journal (nothing is sent: a single member has no one to send to). */
const sync = (node: DomainNode, disk: FileDomainStore): void =>
  void driveReady(
    node,
    disk,
    () => {},
    () => {},
  );

/** A single-member domain: it leads itself, so every proposal commits at once. */
function solo(dir: string, maxLogEntries = 1000, disk = new FileDomainStore(dir, 'always')): { node: DomainNode; disk: FileDomainStore } {
  return { node: soloDomain(disk, maxLogEntries).node, disk };
}
const put = (a: { node: DomainNode; disk: FileDomainStore }, k: string, v: string): void => {
  a.node.propose(1000, [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc(k), value: enc(v) } }]);
  a.node.handleTimeout(1000);
  sync(a.node, a.disk);
};

describe('domain member durability (drivers/store/domain-store.ts)', () => {
  it('a restart finds term, vote, log and state again; applied entries replay to the same hash', () => {
    const dir = tmp();
    const a = solo(dir);
    for (let i = 0; i < 20; i++) put(a, `k${i}`, `v${i}`);
    expect(a.node.raft.commit).toBe(21);
    const digest = a.node.state.digest();
    a.disk.close();
    const b = solo(dir);
    expect(b.node.raft.term).toBe(a.node.raft.term + 1); // it voted for itself again on restart
    expect(b.node.raft.commit).toBe(22);
    expect({ ...b.node.state.digest(), index: 0 }).toEqual({ ...digest, index: 0 });
    b.disk.close();
  });

  it('a torn journal tail is cut; a corrupt snapshot is a hard error', () => {
    const dir = tmp();
    const a = solo(dir, 16);
    for (let i = 0; i < 40; i++) put(a, `k${i}`, `v${i}`);
    a.disk.close();
    expect(statSync(join(dir, 'snapshot')).size).toBeGreaterThan(0);
    appendFileSync(join(dir, 'journal'), Buffer.from([0, 0, 0, 50, 1, 2, 3]));
    const b = new FileDomainStore(dir, 'always');
    expect(b.tornBytes).toBe(7);
    b.close();
    const snap = readFileSync(join(dir, 'snapshot'));
    snap[snap.length - 40] ^= 0xff;
    writeFileSync(join(dir, 'snapshot'), snap);
    expect(() => new FileDomainStore(dir, 'always')).toThrow(StoreError);
  });

  it('compaction rewrites the journal: it stays proportional to the retained log, and a restart still has every key', () => {
    const dir = tmp();
    const a = solo(dir, 32);
    for (let i = 0; i < 500; i++) put(a, `k${i % 50}`, `v${i}`);
    const journal = a.disk.journalBytes();
    expect(journal).toBeLessThan(10_000);
    a.disk.close();
    const b = solo(dir, 32);
    const kv = b.node.state.registers.get('kv')!.state as import('../core/register/map.js').MapState;
    expect(kv.size()).toBe(50);
    expect(new TextDecoder().decode(kv.get(enc('k49'))!.value)).toBe('v499');
    // Sequence numbers are never reused across a rewrite: a reused one would be taken for a retry.
    expect(b.node.propose(2000, [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc('new'), value: enc('1') } }])).toEqual({ seq: 501 });
    b.disk.close();
  });

  it('pending candidates survive a restart and are committed afterwards', () => {
    const dir = tmp();
    const disk = new FileDomainStore(dir, 'always');
    // A member that has served before (its journal holds an entry: one started empty numbers no
    // write until it has caught up, rev 1.37), now with no peers reachable: its candidate stays pending.
    disk.persist([{ kind: 'append', entries: [{ term: 1, index: 1, cmd: new Uint8Array([EntryKind.Noop]) }] }]);
    const n = new DomainNode(
      {
        domain: 1,
        name: 'd',
        id: 1,
        members: [1, 2, 3],
        links: [2, 3],
        registers: [{ name: 'kv', kind: 'map' }],
        seed: 3,
        stored: disk.load(),
        random: (a) => a,
      },
      0,
    );
    const r = n.propose(0, [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc('x'), value: enc('1') } }]);
    expect(r).toEqual({ seq: 1 });
    sync(n, disk);
    disk.close();
    const disk2 = new FileDomainStore(dir, 'always');
    expect(disk2.load()).toMatchObject({ nextSeq: 2, pending: [{ seq: 1 }] });
    disk2.close();
  });
});

/** A domain store whose fsync(2) fails once `failing` is set (as on EIO), from the one seam it has for it. */
class FailingFsyncDomainStore extends FileDomainStore {
  failing = false;
  protected syncFd(fd: number): void {
    if (this.failing) throw new Error('EIO: i/o error, fsync (injected)');
    super.syncFd(fd);
  }
}

describe('domain store: what is fsynced', () => {
  it('fsync always: a batch with any Raft or pending record is fsynced once; one of Commit and Drop records only is not', () => {
    class Counting extends FileDomainStore {
      syncs = 0;
      protected syncFd(fd: number): void {
        this.syncs++;
        super.syncFd(fd);
      }
    }
    const disk = new Counting(tmp(), 'always');
    const opened = disk.syncs;
    const cmd = new Uint8Array([EntryKind.Noop]);
    disk.persist([
      { kind: 'pending', seq: 1, cmd },
      { kind: 'append', entries: [{ term: 1, index: 1, cmd }] },
      { kind: 'pending', seq: 2, cmd },
      { kind: 'append', entries: [{ term: 1, index: 2, cmd }] },
    ]);
    expect(disk.syncs - opened).toBe(1);
    disk.persist([
      { kind: 'commit', index: 2 },
      { kind: 'drop-pending', seq: 1 },
      { kind: 'drop-pending', seq: 2 },
    ]);
    expect(disk.syncs - opened).toBe(1);
    disk.persist([{ kind: 'hard', term: 2, vote: 1 }]);
    expect(disk.syncs - opened).toBe(2);
    disk.close();
    const again = new FileDomainStore(disk.dir, 'always');
    expect(again.load()).toMatchObject({ term: 2, commit: 2, pending: [] });
    again.close();
  });
});

describe('domain store: the background flush of fsync everysec', () => {
  it('a failing background fsync is reported to the owner once (never thrown from the timer); it then fences the member, and later writes throw', async () => {
    vi.useFakeTimers();
    try {
      const dir = tmp();
      const reported: Error[] = [];
      const disk = new FailingFsyncDomainStore(dir, 'everysec', (e) => reported.push(e));
      const { node } = solo(dir, 1000, disk); // it leads itself, its first writes on disk
      disk.failing = true;
      vi.advanceTimersByTime(3500); // three flushes due: one report
      expect(reported).toHaveLength(1);
      expect(reported[0]).toBeInstanceOf(StoreError);
      expect(reported[0].message).toMatch(/journal: fsync: EIO/);
      // The owner fences as for a failed write (DomainHost.storeFailed); a write now is refused by the store too.
      node.propose(1000, [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc('k'), value: enc('v') } }]);
      node.handleTimeout(1000);
      const failed = driveReady(
        node,
        disk,
        () => {},
        () => {},
      );
      expect(failed?.message).toMatch(/after a failed flush/);
      expect(node.fencedCause).toMatch(/durable storage failed/);
      disk.close(); // no second fsync, no throw
    } finally {
      vi.useRealTimers();
    }
  });

  it('close() whose final fsync fails still closes the journal, then throws StoreError', () => {
    const disk = new FailingFsyncDomainStore(tmp(), 'everysec', () => {});
    const fd = (disk as unknown as { fd: number }).fd;
    disk.failing = true;
    expect(() => disk.close()).toThrow(StoreError);
    expect(() => closeSync(fd)).toThrow(/EBADF/);
  });
});
