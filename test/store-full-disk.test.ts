/**
 * A full disk while a store writes (review 39, H3 and H4): an atomic write that fails leaves no
 * partial `.tmp` behind (it would hold the space an operator is freeing), and a store whose
 * close fails on one register still closes every descriptor of every register.
 * The disk is a 1 MiB tmpfs (root: CI runs as root, as the BPF and namespace tests do).
 */
import { afterEach, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { DiskStore, writeAtomic } from '../drivers/store/store.js';
import { HalfPair } from '../core/pair/halfpair.js';
import { requireRoot } from '../testing/lab/netns.js';

const mounts: string[] = [];
afterEach(() => {
  for (const m of mounts.splice(0)) {
    execFileSync('umount', ['-l', m]);
    rmSync(m, { recursive: true, force: true });
  }
});

/** A fresh 1 MiB tmpfs (of at most 64 files and directories). */
function smallDisk(): string {
  requireRoot();
  const dir = mkdtempSync(join(tmpdir(), 'spk-full-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,nr_inodes=64', 'tmpfs', dir]);
  mounts.push(dir);
  return dir;
}

/** Use up the disk's files (an empty pending list is no octet, but a new file). */
function fillFiles(dir: string): void {
  for (let i = 0; ; i++)
    try {
      writeFileSync(join(dir, `inode-${i}`), '');
    } catch {
      return;
    }
}

/** Fill the disk up to its last few octets. */
function fill(dir: string): void {
  for (let i = 0; ; i++) {
    try {
      writeFileSync(join(dir, `fill-${i}`), new Uint8Array(64 * 1024));
    } catch {
      for (let n = 4096; n >= 1; n = Math.floor(n / 2))
        try {
          writeFileSync(join(dir, `fill-${i}-${n}`), new Uint8Array(n));
        } catch {
          /* smaller */
        }
      return;
    }
  }
}

const openFds = (): number => readdirSync('/proc/self/fd').length;

/** A store whose fsyncs fail (EIO) once `failing` is set. */
class FailingSyncStore extends DiskStore {
  failing = false;
  protected syncFd(fd: number): void {
    if (this.failing) throw new Error('EIO: i/o error, fsync (injected)');
    super.syncFd(fd);
  }
}

describe('a full disk', () => {
  it('an atomic write that fails leaves the old file and no partial copy', () => {
    const dir = smallDisk();
    writeAtomic(join(dir, 'f'), new Uint8Array([1, 2, 3]), dir);
    fill(dir);
    expect(() => writeAtomic(join(dir, 'f'), new Uint8Array(256 * 1024), dir)).toThrow(/ENOSPC/);
    const names = readdirSync(dir);
    expect(names).toContain('f');
    expect(names.filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });

  it('a close whose writes fail still closes every register’s descriptors', () => {
    const dir = smallDisk();
    const fds = openFds();
    const regs = ['a', 'b', 'c'].map((name) => ({ name, kind: 'map' as const }));
    const store = new FailingSyncStore(join(dir, 'peer'), 'always');
    const pair = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 7, registers: regs, store }, 0);
    for (const r of pair.registers.values()) store.load(r);
    expect(openFds()).toBeGreaterThanOrEqual(fds + 9); // log, pending and lease per register
    fillFiles(dir);
    // The peer removed by a reload: each register's pending list is emptied in place (no new file,
    // so the full disk allows it) and fsynced, which the disk refuses (EIO).
    store.failing = true;
    expect(() => store.close({ abandonPending: true })).toThrow(/EIO/);
    expect(openFds()).toBe(fds);
  });
});
