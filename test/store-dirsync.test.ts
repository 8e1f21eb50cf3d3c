/**
 * Directory entries made durable before what they hold is relied on.
 *
 * Crash model (POSIX, and ext4 with data=writeback / no journal, ext2, FAT, some network file
 * systems): a file or directory created (or renamed) is in its parent only once the parent
 * directory is fsynced after it; fsync of the file itself does not make its name durable. This
 * file traces node:fs (creations and fsyncs, in order) while the stores run and checks, at the
 * point a write is acknowledged, that no entry they created could still be taken away by a power
 * loss, and that a reopen fsyncs no parent (creation happens once: no cost per write or per start).
 */
import { describe, expect, it, vi } from 'vitest';
import { dirname, join } from 'node:path';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';

const trace = vi.hoisted(() => ({
  fdPath: new Map<number, string>(),
  events: [] as { t: 'create' | 'sync'; path: string }[],
}));

vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs')>();
  const openSync = ((p: string, flags?: string, mode?: number) => {
    const existed = fs.existsSync(p);
    const fd = fs.openSync(p, flags as never, mode);
    trace.fdPath.set(fd, String(p));
    if (!existed) trace.events.push({ t: 'create', path: String(p) });
    return fd;
  }) as typeof fs.openSync;
  const fsyncSync = ((fd: number) => {
    trace.events.push({ t: 'sync', path: trace.fdPath.get(fd) ?? `fd:${fd}` });
    return fs.fsyncSync(fd);
  }) as typeof fs.fsyncSync;
  const fsync = ((fd: number, cb: (e: NodeJS.ErrnoException | null) => void) => {
    trace.events.push({ t: 'sync', path: trace.fdPath.get(fd) ?? `fd:${fd}` });
    return fs.fsync(fd, cb);
  }) as typeof fs.fsync;
  const mkdirSync = ((p: string, o?: { recursive?: boolean; mode?: number }) => {
    // Each directory a recursive mkdir makes is an entry in its parent.
    const made: string[] = [];
    for (let d = String(p); !fs.existsSync(d); d = dirname(d)) made.unshift(d);
    const r = fs.mkdirSync(p, o);
    for (const d of made) trace.events.push({ t: 'create', path: d });
    return r;
  }) as typeof fs.mkdirSync;
  const renameSync = ((a: string, b: string) => {
    fs.renameSync(a, b);
    trace.events.push({ t: 'create', path: String(b) });
  }) as typeof fs.renameSync;
  const mod = { ...fs, openSync, fsyncSync, fsync, mkdirSync, renameSync };
  return { ...mod, default: mod };
});

// Imported after the mock (vi.mock is hoisted: the stores see the traced node:fs).
const { DiskStore } = await import('../drivers/store/store.js');
const { FileDomainStore } = await import('../drivers/store/domain-store.js');
const { HalfPair } = await import('../core/pair/halfpair.js');
const { soloDomain } = await import('./helpers.js');
const { DeltaOp } = await import('../wire/delta.js');

/** Entries created under `root` whose parent directory was not fsynced after their creation: a power loss may remove them. */
function notDurable(root: string): string[] {
  const out: string[] = [];
  trace.events.forEach((e, i) => {
    if (e.t !== 'create' || !e.path.startsWith(root)) return;
    const parent = dirname(e.path);
    const synced = trace.events.slice(i + 1).some((x) => x.t === 'sync' && x.path === parent);
    if (!synced) out.push(e.path);
  });
  return out;
}

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

/** The directory fsyncs of `dir` traced so far. */
const dirSyncs = (dir: string): number => trace.events.filter((e) => e.t === 'sync' && e.path === dir).length;

function pairRound(storeDir: string): InstanceType<typeof DiskStore> {
  const store = new DiskStore(storeDir, 'always');
  const pair = new HalfPair({ pairId: 1, localId: 1, peerId: 2, seed: 77, registers: [{ name: 'kv', kind: 'map' }], writes: 'driver' }, 0);
  for (const r of pair.registers.values()) store.load(r);
  pair.propose(0, 'kv', { op: DeltaOp.Set, key: enc('k'), value: enc('v') });
  pair.collapse(0);
  store.persist(pair.pollWrites()); // durable, as far as the store says: the outcome may now be released
  pair.writesDurable();
  return store;
}

function domainRound(dir: string): InstanceType<typeof FileDomainStore> {
  const disk = new FileDomainStore(dir, 'always');
  const { node, put } = soloDomain(disk);
  expect(node.outcomeOf(put('k', 'v', 1000))?.verdict).toBe('committed');
  return disk;
}

describe('directory entries are fsynced into their parents before a write is acknowledged', () => {
  it('pair store: the data directory, the store directory and the register directory it creates are fsynced into their parents; reopened, none again', () => {
    const root = mkdtempSync(join(tmpdir(), 'spook-dirsync-'));
    try {
      const dataDir = join(root, 'data'); // not there yet: the store makes it too
      const storeDir = join(dataDir, 'peer-b'); // spookd: join(dataDir, peer)
      trace.events.length = 0;
      const store = pairRound(storeDir);
      expect(trace.events.filter((e) => e.t === 'create').map((e) => e.path)).toEqual(
        expect.arrayContaining([dataDir, storeDir, join(storeDir, 'kv'), join(storeDir, 'kv', 'log')]),
      );
      expect(notDurable(root)).toEqual([]);
      store.close();
      // Created once: a restart finds them and fsyncs no parent for them (the register's own files are still fsynced at load).
      trace.events.length = 0;
      pairRound(storeDir).close();
      expect(trace.events.filter((e) => e.t === 'create')).toEqual([]);
      expect([dirSyncs(root), dirSyncs(dataDir)]).toEqual([0, 0]);
    } finally {
      rmSync(root, { recursive: true, force: true });
    }
  });

  it('domain store: its directory, `domains/` and the journal are fsynced into their parents before a term, vote or entry is relied on; reopened, none again', () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'spook-dirsync-'));
    try {
      trace.events.length = 0;
      const dir = join(dataDir, 'domains', 'd'); // spookd: join(dataDir, 'domains', name)
      const disk = domainRound(dir);
      const journal = join(dir, 'journal');
      expect(trace.events.filter((e) => e.t === 'create').map((e) => e.path)).toEqual(
        expect.arrayContaining([join(dataDir, 'domains'), dir, journal]),
      );
      expect(trace.events.filter((e) => e.t === 'sync' && e.path === journal).length).toBeGreaterThan(0);
      expect(notDurable(dataDir)).toEqual([]);
      disk.close();
      trace.events.length = 0;
      domainRound(dir).close();
      expect(trace.events.filter((e) => e.t === 'create')).toEqual([]);
      expect([dirSyncs(dataDir), dirSyncs(join(dataDir, 'domains')), dirSyncs(dir)]).toEqual([0, 0, 0]);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
