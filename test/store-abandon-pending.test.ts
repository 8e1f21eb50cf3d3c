/**
 * A peer removed by a reload: its store's close abandons the own candidates still undecided
 * (their proposers were told `peer-removed`), so that a load, should the peer be configured again,
 * proposes none of them again (OPERATIONS.md, "Writes pending on a removed peer"). The pending
 * list is emptied in place, which needs no new file: written anew (a temporary file renamed over
 * it), a disk with no inode or octet left, or a process with no descriptor, kept every candidate.
 * The disk is a 1 MiB tmpfs (root: CI runs as root, as the BPF and namespace tests do).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DiskStore } from '../drivers/store/store.js';
import { HalfPair } from '../core/pair/halfpair.js';
import { requireRoot } from '../testing/lab/netns.js';
import { set } from './helpers.js';

const mounts: string[] = [];
afterEach(() => {
  for (const m of mounts.splice(0)) {
    execFileSync('umount', ['-l', m]);
    rmSync(m, { recursive: true, force: true });
  }
});

/** A fresh 1 MiB tmpfs of at most 64 files and directories. */
function smallDisk(): string {
  requireRoot();
  const dir = mkdtempSync(join(tmpdir(), 'spk-abandon-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,nr_inodes=64', 'tmpfs', dir]);
  mounts.push(dir);
  return dir;
}

// The follower's end (localId 2): its own candidates wait for the sequencer, undecided.
const opts = { pairId: 1, localId: 2, peerId: 1, seed: 7, registers: [{ name: 'kv', kind: 'map' as const }], writes: 'driver' as const };

function open(dir: string): { store: DiskStore; pair: HalfPair; restored: number } {
  const store = new DiskStore(dir, 'always');
  const pair = new HalfPair(opts, 0);
  let restored = 0;
  for (const r of pair.registers.values()) restored += store.load(r).pendingRestored;
  return { store, pair, restored };
}

describe('abandoning a removed peer’s undecided writes', () => {
  it('on a disk with no file left: none is proposed again when the peer comes back', () => {
    const dir = join(smallDisk(), 'peer');
    const a = open(dir);
    a.pair.propose(0, 'kv', set('k', 'v'));
    a.store.persist(a.pair.pollWrites());
    a.pair.writesDurable();
    expect(a.pair.register('kv').pendingCount).toBe(1);
    // Every inode used (an empty file is no octet, but a new file).
    for (let i = 0; ; i++)
      try {
        writeFileSync(join(dir, '..', `inode-${i}`), '');
      } catch {
        break;
      }
    let closeError: string | undefined;
    try {
      a.store.close({ abandonPending: true });
    } catch (e) {
      closeError = (e as Error).message;
    }
    const b = open(dir);
    const seen = { closeError, restored: b.restored, pending: b.pair.register('kv').pendingCount };
    b.store.close();
    // main: { closeError: "ENOSPC: no space left on device, open '…/kv/pending.tmp'", restored: 1, pending: 1 }
    expect(seen).toEqual({ closeError: undefined, restored: 0, pending: 0 });
  });
});
