/**
 * A QN domain member's store (journal and snapshot, drivers/store/domain-store.ts) under the
 * power-loss model of test/power-loss-fs.ts: what was not fsynced is gone (file data, and
 * creates, renames and unlinks not fsynced into their directory). A one-member domain commits
 * writes, compacts its log behind background snapshots (the journal rewritten) and restarts now
 * and then; each image taken after an fsync is loaded as a restart after a power cut there, and
 * must hold every write reported committed before it, and its proposals reported pending.
 */
import { describe, expect, it, vi } from 'vitest';
import { join } from 'node:path';

const model = await vi.hoisted(async () => (await import('./power-loss-fs.js')).powerLossModel());
vi.mock('node:fs', async (orig) => (await import('./power-loss-fs.js')).tracedFs(await orig(), model));
vi.mock('node:fs/promises', async (orig) => (await import('./power-loss-fs.js')).tracedFsPromises(await orig(), model));

const fs = await import('node:fs');
const pl = await import('./power-loss-fs.js');
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
    pl.startModel(model, root);
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
      // One directory for every cut, emptied first: hundreds left to tempDirs' afterEach took over its 10 s on a loaded machine.
      const c = join(dir, 'cut');
      fs.rmSync(c, { recursive: true, force: true });
      fs.mkdirSync(c, { recursive: true });
      pl.materialize(fs, model, root, i, c, (j & 1) === 1);
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
