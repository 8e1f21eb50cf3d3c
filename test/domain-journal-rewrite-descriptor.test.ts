/**
 * A domain journal's rewrite after a compaction closes the journal's descriptor first (so that
 * the rewrite has one to use), writes the new journal, and opens it again. When no descriptor is
 * left for that reopen (EMFILE: another thread took the one freed meanwhile, a snapshot job's open
 * on libuv's pool), the store kept the closed descriptor's number: the next file the process
 * opened got it, and the store's close closed that file (another store's log, a wrapped
 * connection's socket). Now the store keeps no closed descriptor: it is failed (nothing more is
 * written; the domain is fenced) and its close closes nothing it does not hold.
 */
import { afterEach, describe, expect, it, vi } from 'vitest';

const fault = vi.hoisted(() => ({ emfile: [] as string[] }));

vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs')>();
  // The next opens of the paths in `fault.emfile` (in order) find no descriptor.
  const openSync = ((p: string, flags?: string, mode?: number) => {
    if (fault.emfile.length > 0 && String(p).endsWith(fault.emfile[0])) {
      fault.emfile.shift();
      throw Object.assign(new Error(`EMFILE: too many open files, open '${String(p)}'`), { code: 'EMFILE' });
    }
    return fs.openSync(p, flags as never, mode);
  }) as typeof fs.openSync;
  const mod = { ...fs, openSync };
  return { ...mod, default: mod };
});

// Imported after the mock (vi.mock is hoisted: the stores see this node:fs).
const { closeSync, fstatSync, mkdtempSync, openSync, rmSync } = await import('node:fs');
const { tmpdir } = await import('node:os');
const { join } = await import('node:path');
const { FileDomainStore } = await import('../drivers/store/domain-store.js');

const dirs: string[] = [];
afterEach(() => {
  fault.emfile = [];
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('a domain journal rewrite that finds no descriptor to reopen the journal', () => {
  it("fails the store, and its close closes no other file's descriptor", () => {
    const dir = mkdtempSync(join(tmpdir(), 'spk-dom-rewrite-'));
    dirs.push(dir);
    const disk = new FileDomainStore(join(dir, 'dom'), 'always');
    const cmd = new Uint8Array([0]);
    disk.persist([
      {
        kind: 'append',
        entries: [1, 2, 3].map((index) => ({ term: 1, index, cmd })),
      },
    ]);
    // The compaction's rewrite: its temporary file finds no descriptor, and neither does the reopen.
    fault.emfile = ['journal.tmp', 'journal'];
    expect(() => disk.persist([{ kind: 'compact', base: 2, baseTerm: 1, reset: false }])).toThrow(/EMFILE/);
    // The process opens another file (the lowest number free: the journal's, closed by the rewrite).
    const other = openSync(join(dir, 'other'), 'w');
    let closedOther = false;
    try {
      // Nothing more is written through the store (it would go to the other file).
      let wrote = true;
      try {
        disk.persist([{ kind: 'append', entries: [{ term: 1, index: 4, cmd }] }]);
      } catch {
        wrote = false;
      }
      try {
        disk.close();
      } catch {
        /* a failed store may say so */
      }
      try {
        fstatSync(other);
      } catch {
        closedOther = true;
      }
      // main: { wrote: true, closedOther: true } (the append went into `other`, and the close closed it)
      expect({ wrote, closedOther }).toEqual({ wrote: false, closedOther: false });
    } finally {
      if (!closedOther) closeSync(other);
    }
  });
});
