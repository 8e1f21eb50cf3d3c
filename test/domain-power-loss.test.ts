/**
 * A QN domain member's store (journal and snapshot, drivers/store/domain-store.ts) under the
 * power-loss model of test/store-power-loss.test.ts: what was not fsynced is gone (file data, and
 * creates, renames and unlinks not fsynced into their directory). A one-member domain commits
 * writes, compacts its log behind background snapshots (the journal rewritten) and restarts now
 * and then; each image taken after an fsync is loaded as a restart after a power cut there, and
 * must hold every write reported committed before it, and its proposals reported pending.
 */
import { describe, expect, it, vi } from 'vitest';
import { join } from 'node:path';

const model = vi.hoisted(() => ({
  root: '',
  fdPath: new Map<number, string>(),
  content: new Map<number, Uint8Array>(),
  dirs: new Map<string, Map<string, { ino: number; dir: boolean }>>(),
  synced: undefined as ((fd: number) => void) | undefined,
  images: [] as {
    live: Map<string, Map<string, { ino: number; dir: boolean }>>;
    dirs: Map<string, Map<string, { ino: number; dir: boolean }>>;
    content: Map<number, Uint8Array>;
  }[],
}));

vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs')>();
  const under = (p: string): boolean => model.root !== '' && (p === model.root || p.startsWith(`${model.root}/`));
  const entries = (p: string): Map<string, { ino: number; dir: boolean }> => {
    const m = new Map<string, { ino: number; dir: boolean }>();
    for (const name of fs.readdirSync(p)) {
      const s = fs.lstatSync(`${p}/${name}`);
      m.set(name, { ino: s.ino, dir: s.isDirectory() });
      if (s.isDirectory()) for (const [n, e] of entries(`${p}/${name}`)) m.set(`${name}/${n}`, e);
    }
    return m;
  };
  const synced = (fd: number): void => {
    const p = model.fdPath.get(fd);
    if (p === undefined || !under(p)) return;
    const st = fs.fstatSync(fd);
    if (st.isDirectory()) model.dirs.set(p, new Map([...entries(p)].filter(([n]) => !n.includes('/'))));
    else model.content.set(st.ino, fs.readFileSync(`/proc/self/fd/${fd}`));
    model.images.push({ live: new Map([[model.root, entries(model.root)]]), dirs: new Map(model.dirs), content: new Map(model.content) });
  };
  model.synced = synced;
  const openSync = ((p: string, flags?: string, mode?: number) => {
    const fd = fs.openSync(p, flags as never, mode);
    model.fdPath.set(fd, String(p));
    return fd;
  }) as typeof fs.openSync;
  const fsyncSync = ((fd: number) => {
    fs.fsyncSync(fd);
    synced(fd);
  }) as typeof fs.fsyncSync;
  const fsync = ((fd: number, cb: (e: NodeJS.ErrnoException | null) => void) =>
    fs.fsync(fd, (e) => {
      if (!e) synced(fd);
      cb(e);
    })) as typeof fs.fsync;
  const mod = { ...fs, openSync, fsyncSync, fsync };
  return { ...mod, default: mod };
});

vi.mock('node:fs/promises', async (importOriginal) => {
  const fsp = await importOriginal<typeof import('node:fs/promises')>();
  const open = async (p: string, flags?: string, mode?: number) => {
    const fh = await fsp.open(p, flags, mode);
    model.fdPath.set(fh.fd, String(p));
    const sync = fh.sync.bind(fh);
    fh.sync = async () => {
      await sync();
      model.synced?.(fh.fd);
    };
    return fh;
  };
  const mod = { ...fsp, open };
  return { ...mod, default: mod };
});

const fs = await import('node:fs');
const { FileDomainStore } = await import('../drivers/store/domain-store.js');
const { DomainNode } = await import('../core/qn/node.js');
const { driveReady } = await import('../core/qn/persist.js');
const { DeltaOp } = await import('../wire/delta.js');
const { tempDirs } = await import('./helpers.js');
type Store = InstanceType<typeof FileDomainStore>;
type Node = InstanceType<typeof DomainNode>;

const tmp = tempDirs('spook-domain-power-loss');
const REGISTERS = [{ name: 'kv', kind: 'map' as const }];
const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

/** Start the model on an empty, durable directory. */
function startModel(root: string): void {
  model.root = root;
  model.fdPath.clear();
  model.content.clear();
  model.dirs.clear();
  model.dirs.set(root, new Map());
  model.images.length = 0;
  model.images.push({ live: new Map([[root, new Map()]]), dirs: new Map(model.dirs), content: new Map() });
}

/**
 * Write image `i` out as a directory tree: what a power cut right after its fsync leaves. `live`:
 * every create, rename and unlink made so far kept, only the data not fsynced gone (a file system
 * that commits names before data).
 */
function materialize(root: string, i: number, to: string, live = false): void {
  const im = model.images[i];
  if (live) {
    for (const [name, e] of im.live.get(root)!) {
      if (e.dir) fs.mkdirSync(join(to, name), { recursive: true });
      else fs.writeFileSync(join(to, name), im.content.get(e.ino) ?? new Uint8Array(0));
    }
    return;
  }
  const walk = (src: string, dst: string): void => {
    fs.mkdirSync(dst, { recursive: true });
    for (const [name, e] of im.dirs.get(src) ?? []) {
      if (e.dir) walk(`${src}/${name}`, join(dst, name));
      else fs.writeFileSync(join(dst, name), im.content.get(e.ino) ?? new Uint8Array(0));
    }
  };
  walk(root, to);
}

interface Member {
  node: Node;
  disk: Store;
  now: number;
  /** Own candidates reported committed (by seq) in this run. */
  committed: Set<number>;
}

/** Persist what the node produced and publish its outcomes (domains.ts persistReady). */
function sync(m: Member): void {
  const failed = driveReady(
    m.node,
    m.disk,
    () => {},
    (ev) => {
      if (ev.type === 'outcome' && ev.committed) m.committed.add(ev.seq);
    },
  );
  if (failed) throw failed;
}

/** A one-member domain on `dir` (it elects itself; a proposal commits at once), as spookd wires its store. */
function open(dir: string, maxLogEntries = 24): Member {
  const m = { now: 0, committed: new Set<number>() } as Member;
  m.disk = new FileDomainStore(
    dir,
    'always',
    (e) => {
      throw e;
    },
    (r) => {
      if (r.ok) m.node.snapshotDurable(r.meta, () => m.disk.readSnapshot(r.meta.index));
      else m.node.snapshotFailed(r.meta.index);
      sync(m);
    },
  );
  m.node = new DomainNode(
    {
      domain: 1,
      name: 'd',
      id: 1,
      members: [1],
      links: [],
      registers: REGISTERS,
      groups: [],
      seed: 3,
      stored: m.disk.load(),
      random: (a) => a,
      electionMs: 100,
      heartbeatMs: 20,
      maxLogEntries,
      backgroundSnapshots: true,
    },
    0,
  );
  m.now = 500;
  m.node.handleTimeout(m.now); // elects itself
  sync(m);
  return m;
}

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

describe('domain store under a power-loss model (unsynced writes, creates, renames and unlinks undone)', () => {
  it('every cut loads, with every write reported committed and every proposal reported pending', async () => {
    const dir = tmp();
    const root = join(dir, 'domain');
    startModel(root);
    let rng = 991;
    const rand = (k: number): number => {
      rng = (rng * 1103515245 + 12345) & 0x7fffffff;
      return rng % k;
    };
    fs.mkdirSync(root, { recursive: true });
    fs.fsyncSync(fs.openSync(root, 'r'));
    let m = open(root);
    /** Per image: the keys (and values) reported committed by then, and the seqs reported pending. */
    const acks: { at: number; values: Map<string, string>; pending: number[] }[] = [];
    const values = new Map<string, string>();
    const pending: number[] = [];
    const byseq = new Map<number, [string, string]>();
    /** Per key, the values committed, in order. */
    const history = new Map<string, string[]>();
    let k = 0;
    for (let round = 0; round < 120; round++) {
      for (let i = 1 + rand(3); i > 0; i--, k++) {
        const key = `k${rand(50)}`;
        const value = `v${k}`.repeat(1 + rand(6));
        const r = m.node.propose(m.now, [{ register: 'kv', delta: { op: DeltaOp.Set, key: enc(key), value: enc(value) } }]);
        if ('seq' in r) byseq.set(r.seq, [key, value]);
        // Now and then one is reported pending (its client's timeout) once its Pending record is durable.
        if ('seq' in r && rand(5) === 0) {
          sync(m);
          pending.push(r.seq);
          acks.push({ at: model.images.length - 1, values: new Map(values), pending: [...pending] });
          continue;
        }
      }
      m.now += 1;
      m.node.handleTimeout(m.now);
      sync(m);
      for (const seq of m.committed) {
        const [key, value] = byseq.get(seq)!;
        values.set(key, value);
        history.set(key, [...(history.get(key) ?? []), value]);
      }
      m.committed.clear();
      acks.push({ at: model.images.length - 1, values: new Map(values), pending: [...pending] });
      if (rand(3) === 0) await turn(); // background snapshots go on
      if (rand(3) === 0) await turn();
      // A restart now and then (kill -9: nothing more flushed; the page cache kept).
      if (rand(30) === 0) {
        await m.disk.settled();
        m = open(root);
      }
    }
    m.disk.close();
    await m.disk.settled();
    model.root = ''; // the loads below are not traced
    const seen = new Set<string>();
    for (const im of model.images) for (const d of im.dirs.values()) for (const name of d.keys()) seen.add(name);
    expect(seen).toContain('snapshot');
    // The log was compacted behind background snapshots many times (each rewrites the journal: a new file).
    const journals = new Set(
      model.images.flatMap((im) => [...(im.dirs.get(root) ?? new Map()).entries()].filter(([n]) => n === 'journal').map(([, e]) => e.ino)),
    );
    expect(journals.size).toBeGreaterThan(5);
    expect(acks.at(-1)!.values.size).toBeGreaterThan(20);
    expect(model.images.length).toBeGreaterThan(150);
    const failures: string[] = [];
    for (let j = 0; j < 2 * model.images.length; j++) {
      const i = j >> 1;
      const need = acks.filter((a) => a.at <= i).pop();
      const c = tmp();
      fs.mkdirSync(c, { recursive: true });
      materialize(root, i, c, (j & 1) === 1);
      const name = `image ${i}${j & 1 ? ' (names kept)' : ''}`;
      let b: Member;
      try {
        b = open(c);
      } catch (e) {
        failures.push(`${name}: load failed: ${(e as Error).message}`);
        continue;
      }
      // Once it has led a term again, every entry its journal holds is committed and applied.
      b.now += 1000;
      b.node.handleTimeout(b.now);
      sync(b);
      const kv = b.node.state.registers.get('kv')!.state as unknown as { get(k: Uint8Array): { value: Uint8Array } | undefined };
      for (const [key, value] of need?.values ?? []) {
        const got = kv.get(enc(key));
        const v = got && Buffer.from(got.value).toString();
        // A later write of the key may have committed after the ack (and be durable): only a value older than the ack is a loss.
        const h = history.get(key)!;
        if (v === undefined || h.indexOf(v) < h.indexOf(value))
          failures.push(`${name}: ${key} is ${v ?? 'absent'}, older than the committed ${value}`);
      }
      for (const seq of need?.pending ?? [])
        if (b.node.outcomeOf(seq) === undefined) failures.push(`${name}: candidate ${seq} reported pending is lost`);
      b.disk.close();
      await b.disk.settled();
    }
    expect(failures.slice(0, 10)).toEqual([]);
  }, 60_000);
});
