/**
 * The pair store under a power-loss model: what was not fsynced is gone. A file holds what it held
 * at its last fsync(2) (nothing, if never fsynced); a directory holds the entries it held at its
 * last fsync (a create, rename or unlink not fsynced into its directory is undone; a directory
 * never fsynced is empty). node:fs is traced: after every fsync the durable image is taken. Each
 * image is then loaded as a restart after a power cut at that point, and must hold every version
 * committed and every own candidate reported pending before it, and only states the pair had.
 */
import { describe, expect, it, vi } from 'vitest';
import { join } from 'node:path';

const model = await vi.hoisted(async () => (await import('./power-loss-fs.js')).powerLossModel());
vi.mock('node:fs', async (orig) => (await import('./power-loss-fs.js')).tracedFs(await orig(), model));
vi.mock('node:fs/promises', async (orig) => (await import('./power-loss-fs.js')).tracedFsPromises(await orig(), model));

const fs = await import('node:fs');
const pl = await import('./power-loss-fs.js');
const { DiskStore } = await import('../drivers/store/store.js');
const { HalfPair } = await import('../core/pair/halfpair.js');
const { cross, del, set, tempDirs } = await import('./helpers.js');
type Pair = InstanceType<typeof HalfPair>;
type Store = InstanceType<typeof DiskStore>;

const tmp = tempDirs('spook-power-loss');
const REGS = [
  { name: 'kv', kind: 'map' as const },
  { name: 'kv2', kind: 'map' as const },
];

const opts = { pairId: 1, localId: 1, peerId: 2, seed: 77, registers: REGS, writes: 'driver' as const };

let background = false;
function open(dir: string, maxLogBytes: number): { store: Store; pair: Pair } {
  const store = new DiskStore(dir, 'always', maxLogBytes);
  store.backgroundSnapshotBytes = background ? 0 : Number.MAX_SAFE_INTEGER;
  const pair = new HalfPair(opts, 0);
  for (const r of pair.registers.values()) store.load(r);
  return { store, pair };
}

/**
 * One batch as spookd's commit pass makes it (fsync always): written, its fsyncs (and the snapshots
 * of the registers it replaces) off the event loop, landed, then released. `replace`: the batch also
 * replaces that register (as a reconciliation does; here by its own state).
 */
async function batch(t: { store: Store; pair: Pair }, replace?: string): Promise<void> {
  const w = t.pair.pollWrites();
  if (replace) {
    const image = t.pair.register(replace);
    w.push({ kind: 'replaced', image, version: image.version });
  }
  if (w.length === 0) return;
  for (const x of w) if (x.kind === 'append') onRecord(x.register, x.rec.version, `${x.rec.version}:${x.rec.hash.hi}:${x.rec.hash.lo}`);
  const fds = t.store.write(w);
  await t.store.syncAll(fds);
  t.store.batchDurable();
  t.pair.writesDurable();
}
const turn = (): Promise<void> => new Promise((r) => setImmediate(r));

let onRecord: (register: string, version: number, key: string) => void = () => undefined;

const key = (p: Pair, name: string): string => {
  const r = p.register(name);
  return `${r.version}:${r.hash.hi}:${r.hash.lo}`;
};

describe('pair store under a power-loss model (unsynced writes, creates, renames and unlinks undone)', () => {
  it.each([
    ['snapshots written at once', false],
    ['snapshots in the background', true],
  ])('every cut loads to a state the pair had, with every acknowledged version and reported pending candidate (%s)', async (_, bg) => {
    background = bg;
    const dir = tmp();
    const root = join(dir, 'store');
    pl.startModel(model, root);
    let rng = 4242;
    const rand = (k: number): number => {
      rng = (rng * 1103515245 + 12345) & 0x7fffffff;
      return rng % k;
    };
    /** Per register, the (version, hash) the pair had at each version. */
    const history = new Map<string, Map<number, string>>(REGS.map((r) => [r.name, new Map([[0, key(new HalfPair(opts, 0), r.name)]])]));
    /** What was acknowledged, by the image it is durable in: versions and own candidates reported pending. */
    const acks: { at: number; versions: Map<string, number>; pending: Map<string, number[]> }[] = [];
    onRecord = (register, v, k) => history.get(register)!.set(v, k);
    let t = open(root, 1500);
    const secured = new Map<string, number[]>(REGS.map((r) => [r.name, []]));
    const ack = (): void => {
      for (const r of REGS) history.get(r.name)!.set(t.pair.register(r.name).version, key(t.pair, r.name));
      acks.push({
        at: model.images.length - 1,
        versions: new Map(REGS.map((r) => [r.name, t.pair.register(r.name).version])),
        pending: new Map([...secured].map(([n, s]) => [n, [...s]])),
      });
    };
    let k = 0;
    for (let round = 0; round < (bg ? 110 : 60); round++) {
      for (let i = 1 + rand(4); i > 0; i--, k++) {
        const c = rand(10);
        if (c < 5) t.pair.propose(0, 'kv', set(`k${rand(60)}`, `v${k}`.repeat(1 + rand(8))));
        else if (c < 6) t.pair.propose(0, 'kv', del(`k${rand(60)}`));
        else if (c < 8) t.pair.propose(0, 'kv2', set(`j${rand(60)}`, `w${k}`));
        else t.pair.propose(0, 'kv', cross(['kv', set(`x${rand(40)}`, `c${k}`)], ['kv2', set(`y${rand(40)}`, `c${k}`)]));
      }
      // Now and then an own candidate the proposer is told is pending (a write that timed out), decided later.
      if (rand(6) === 0) {
        const id = t.pair.propose(0, 'kv', set(`p${k++}`, 'pending'));
        t.pair.secureOwn(0, 'kv', id.seq);
        await batch(t);
        secured.get('kv')!.push(id.seq);
        ack();
      }
      t.pair.collapse(0);
      // A reconciliation now and then: the register's state replaced, landed with a commit record.
      await batch(t, rand(12) === 0 ? (rand(2) === 0 ? 'kv' : 'kv2') : undefined);
      ack();
      if (rand(30) === 0) {
        t.store.replaced(t.pair.register(rand(2) === 0 ? 'kv' : 'kv2'));
        ack();
      }
      if (rand(3) === 0) await turn(); // background snapshots go on
      // A restart now and then (kill -9: nothing more flushed; the page cache kept).
      if (rand(40) === 0) {
        t = open(root, 1500);
        t.pair.collapse(0);
        await batch(t);
        ack();
      }
    }
    await t.store.settle(5000);
    model.root = ''; // the loads below are not traced
    // The images did catch each kind of file on disk (the paths the model is meant to cut through).
    const seen = new Set<string>();
    for (const im of model.images) for (const m of im.dirs.values()) for (const name of m.keys()) seen.add(name);
    for (const f of ['snapshot', 'snapshot.next', '@replacing', ...(bg ? ['log.old'] : [])]) expect(seen).toContain(f);
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
      let b: ReturnType<typeof open>;
      try {
        b = open(c, 1500);
      } catch (e) {
        failures.push(`image ${i}${j & 1 ? ' (names kept)' : ''}: load failed: ${(e as Error).message}`);
        continue;
      }
      for (const r of REGS) {
        const rep = b.pair.register(r.name);
        const v = rep.version;
        if (history.get(r.name)!.get(v) !== key(b.pair, r.name))
          failures.push(`image ${i}${j & 1 ? ' (names kept)' : ''}: ${r.name} v${v} is no state the pair had`);
        if (need && v < need.versions.get(r.name)!)
          failures.push(
            `image ${i}${j & 1 ? ' (names kept)' : ''}: ${r.name} at v${v}, below the acknowledged v${need.versions.get(r.name)}`,
          );
        const mark = rep.origins.get(1) ?? 0;
        const own = new Set(rep.ownCandidates().map((o) => o.seq));
        for (const s of need?.pending.get(r.name) ?? [])
          if (s > mark && !own.has(s))
            failures.push(`image ${i}${j & 1 ? ' (names kept)' : ''}: ${r.name} own candidate ${s} reported pending is lost`);
      }
      b.store.close();
    }
    expect(failures.slice(0, 10)).toEqual([]);
  });
});
