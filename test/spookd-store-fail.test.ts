import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { has, inProcess, until, writeTold } from './inproc.js';
import { portBase } from './ports.js';
import { HoldStore, spookdWithStores } from './hold-store.js';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pino } from 'pino';
import { configSchema } from '../drivers/daemon/config.js';
import { Spookd } from '../drivers/daemon/spookd.js';
import { encodeKey } from '../drivers/daemon/keys.js';
import { DiskStore, StoreError } from '../drivers/store/store.js';
import type { PairWrite } from '../core/pair/types.js';
import { generateKeyPair } from '../crypto/primitives.js';
import { DeltaOp } from '../wire/delta.js';
import { PairState } from '../core/pair/lifecycle.js';
import { pairHandlers, pairSummary } from '../drivers/admin/pair.js';
import { ProposeError } from '../core/pair/replica.js';
import { pairIdentity } from '../core/etcp/endpoint.js';

/**
 * A store that fails (spookd's pair writes, drivers/daemon/spookd.ts): three spookd in this
 * process on loopback, a (peers b and c), b, c, fsync "always". a's store for b starts
 * failing (as on EIO or ENOSPC): that pair is fenced, never reports a write that did not
 * reach the disk, and the a-c pair keeps committing; the process carries on.
 */
class FailingStore extends HoldStore {
  failing = false;
  /** Batches this store made durable, by size (group commit: several writes in one). */
  readonly batches: number[] = [];
  write(writes: readonly PairWrite[]): number[] {
    if (this.failing) throw new StoreError(`${this.dir}: write: EIO: i/o error (injected)`);
    const fds = super.write(writes);
    this.batches.push(writes.length);
    return fds;
  }
}

const base = portBase('spookd-store-fail.test.ts');
const lab = inProcess('spook-storefail', ['a', 'b', 'c'], base);
const { dir, logs } = lab;
const d: Record<string, Spookd> = {};
const stores = new Map<string, FailingStore>();

const make = (name: string, peers: string[]): Spookd =>
  spookdWithStores(lab, name, peers, (dir, fsync) => new FailingStore(dir, fsync), stores);
const write = writeTold;

beforeAll(async () => {
  d.a = make('a', ['b', 'c']);
  d.b = make('b', ['a']);
  d.c = make('c', ['a']);
  await Promise.all(Object.values(d).map((s) => s.start()));
  await until(
    'a-b and a-c entangled',
    () => d.a.link('b').pair.state === PairState.ENTANGLED && d.a.link('c').pair.state === PairState.ENTANGLED,
  );
}, 30_000);

afterAll(async () => {
  await Promise.all(Object.values(d).map((s) => s.stop()));
  rmSync(dir, { recursive: true, force: true });
});

describe('spookd: a pair whose store fails', () => {
  it('commits go to disk in batches before they are announced (fsync always)', async () => {
    const w = [write(d.a, 'b', 'ab-0'), write(d.a, 'b', 'ab-1'), write(d.a, 'b', 'ab-2')];
    await until('a-b writes committed and crossed', () => w.every((x) => x.told.length === 1) && has(d.b, 'a', 'ab-2'));
    for (const x of w) expect(x.told[0]).toMatchObject({ verdict: 'committed' });
    // Three proposals in one turn of the event loop: the first batch holds the lease and what they wrote (one fsync per file).
    expect(stores.get('a-b')!.batches[0]).toBeGreaterThanOrEqual(2);
    expect(d.a.commits.writes).toBeGreaterThan(d.a.commits.batches);
  });

  it('fsyncs run off the event loop: nothing a batch caused (an outcome, a datagram, a read of what it committed) is seen before they end; the loop and the other pair go on', async () => {
    // The end that sequences a-c writes (its batch holds the collapse a read must not see early).
    const [S, P, sName, pName] = d.a.link('c').pair.role === 'sequencer' ? [d.a, d.c, 'a', 'c'] : [d.c, d.a, 'c', 'a'];
    const s = stores.get(`${sName}-${pName}`)!;
    const lc = S.link(pName);
    expect(lc.pair.role).toBe('sequencer');
    s.hold = true;
    try {
      const w = write(S, pName, 'held-1');
      await until('a-c batch syncing', () => s.held.length > 0);
      const held = s.held.length;
      expect(S.commits.syncing).toBe(1);
      // A read at the sequencer waits for the batch that holds the collapse.
      const h = pairHandlers(S);
      const call = { onClose: () => {} } as never;
      let read: { found: boolean } | undefined;
      void Promise.resolve(h.get({ peer: pName, register: 'config', key: 'held-1' } as never, call)).then(
        (r) => (read = r as { found: boolean }),
      );
      // The loop runs: the other pair commits both ways meanwhile.
      const ab = write(d.a, 'b', 'while-held');
      await until('a-b commits while a-c syncs', () => ab.told.length === 1 && has(d.b, 'a', 'while-held'));
      expect(ab.told[0]).toMatchObject({ verdict: 'committed' });
      // A second write waits for the first batch: no new fsync of that store meanwhile.
      const w2 = write(S, pName, 'held-2');
      await new Promise((r) => setTimeout(r, 200));
      expect(s.held.length).toBe(held);
      expect(w.told).toEqual([]);
      expect(w2.told).toEqual([]);
      expect(read).toBeUndefined();
      expect(has(P, sName, 'held-1')).toBe(false);
      s.release();
      await until('a-c writes committed and crossed', () => w.told.length === 1 && w2.told.length === 1 && has(P, sName, 'held-2'));
      expect(w.told[0]).toMatchObject({ verdict: 'committed' });
      expect(w2.told[0]).toMatchObject({ verdict: 'committed' });
      await until('the read answered', () => read !== undefined);
      // The batch held the collapse: the read saw it, once durable.
      expect(read!.found).toBe(true);
      expect(S.commits.syncing).toBe(0);
      expect(lc.fenced).toBeUndefined();
    } finally {
      s.release();
    }
  }, 20_000);

  it('is fenced alone (decoherent, cause store-failed, logged once, counted): nothing it did not make durable is acknowledged or sent; the other pair keeps committing', async () => {
    const lb = d.a.link('b');
    const versionAtB = d.b.link('a').pair.register('config').version;
    stores.get('a-b')!.failing = true;
    const lost = [write(d.a, 'b', 'lost-1'), write(d.a, 'b', 'lost-2')];
    await until('a fences b', () => lb.fenced !== undefined);
    expect(lb.fenced).toMatchObject({ cause: 'store-failed' });
    expect(lb.fenced!.error).toMatch(/EIO/);
    expect(lb.pair.state).toBe('DECOHERENT');
    expect(lb.session).toBeUndefined();
    // The pair keeps being asked (b's keepalives, new handshakes; timers): nothing more logged, counted or written.
    await new Promise((r) => setTimeout(r, 1000));
    for (const x of lost) expect(x.told).toEqual([]);
    expect(has(d.b, 'a', 'lost-1') || has(d.b, 'a', 'lost-2')).toBe(false);
    expect(d.b.link('a').pair.register('config').version).toBe(versionAtB);
    expect(d.a.commits.storeFailures).toBe(1);
    // A storage failure is not a dropped datagram: counted as a store failure only.
    expect(d.a.drops['internal-error'] ?? 0).toBe(0);
    expect(logs.a.filter((l) => l.includes('durable storage failed')).length).toBe(1);
    // The other pair still commits both ways, on disk.
    const ac = write(d.a, 'c', 'to-c');
    write(d.c, 'a', 'from-c');
    await until('a-c writes cross', () => has(d.c, 'a', 'to-c') && has(d.a, 'c', 'from-c') && ac.told.length === 1);
    expect(ac.told[0]).toMatchObject({ verdict: 'committed' });
    expect(d.a.link('c').fenced).toBeUndefined();
    expect(stores.get('a-c')!.batches.length).toBeGreaterThan(0);
  }, 20_000);

  it('a fenced pair refuses admin reads and writes with pair-fenced (no dirty read, no write left pending forever); the other pair still serves both', async () => {
    const lb = d.a.link('b');
    expect(lb.fenced).toBeDefined(); // by the test above
    const h = pairHandlers(d.a);
    const call = { onClose: () => {} };
    /** The error code a handler fails with, synchronously or not. */
    const codeOf = async (f: () => unknown): Promise<string | undefined> => {
      try {
        await f();
      } catch (e) {
        return (e as { code?: string }).code;
      }
      return undefined;
    };
    const args = <T>(a: T): never => a as never;
    expect(await codeOf(() => h.get(args({ peer: 'b', register: 'config', key: 'ab-0' }), call))).toBe('pair-fenced');
    for (const [cmd, a] of [
      ['set', { key: 'w', value: 'v' }],
      ['del', { key: 'ab-0' }],
      ['cas', { key: 'ab-0', expect: 1, value: 'v' }],
    ] as const) {
      const f = h[cmd] as (x: never, c: typeof call) => unknown;
      expect(await codeOf(() => f(args({ peer: 'b', register: 'config', timeoutMs: 300, ...a }), call))).toBe('pair-fenced');
    }
    // The core refuses too (a follower would take the candidate and never persist it; a sequencer never collapse it).
    expect(() => lb.pair.propose(d.a.now(), 'config', { op: DeltaOp.Set, key: Buffer.from('k'), value: Buffer.from('v') })).toThrow(
      ProposeError,
    );
    // Still listed, with the cause that says its registers are not to be trusted.
    expect(pairSummary(lb).fenced).toMatchObject({ cause: 'store-failed' });
    // The other pair reads and writes as ever.
    const got = (await h.get(args({ peer: 'c', register: 'config', key: 'to-c' }), call)) as { found: boolean };
    expect(got.found).toBe(true);
    const out = await h.set(args({ peer: 'c', register: 'config', key: 'admin-c', value: 'v', timeoutMs: 10_000 }), call);
    expect(out).toMatchObject({ verdict: 'committed' });
  }, 20_000);
});

/** A store whose fsync(2) fails once `failing` is set, through DiskStore's seams for it (on the loop and off it). */
class FailingFsyncStore extends DiskStore {
  failing = false;
  /** The next fsync on the loop fails, and later ones succeed (fsyncgate: a retry proves nothing). */
  failOnce = false;
  protected syncFd(fd: number): void {
    if (this.failing || this.failOnce) {
      this.failOnce = false;
      throw new Error('EIO: i/o error, fsync (injected)');
    }
    super.syncFd(fd);
  }
  protected syncFdAsync(fd: number): Promise<void> {
    return this.failing ? Promise.reject(new Error('EIO: i/o error, fsync (injected)')) : super.syncFdAsync(fd);
  }
}

describe('spookd: fsync always whose fsync fails off the event loop', () => {
  it('fences that pair only (store-failed), acknowledges nothing of the batch; the other pair commits; stop() closes every store', async () => {
    const k = generateKeyPair();
    writeFileSync(join(dir, 'x.key'), Buffer.from(k.privateKey).toString('base64'));
    // Peers with no endpoint: a's writes are its own (collapsed alone as sequencer, or kept as proposals as follower).
    const cfg = configSchema.parse({
      listen: `127.0.0.6:${base}`,
      privateKeyFile: join(dir, 'x.key'),
      dataDir: join(dir, 'x'),
      adminSocket: join(dir, 'x.sock'),
      fsync: 'always',
      peers: ['y', 'z'].map((name) => ({ name, publicKey: encodeKey(generateKeyPair().publicKey) })),
      registers: [{ name: 'config', kind: 'map' }],
    });
    const xs = new Map<string, FailingFsyncStore>();
    const x = new Spookd(cfg, k, pino({ level: 'silent' }), (peer, dir, fsync, onFlushFailed) => {
      const s = new FailingFsyncStore(dir, fsync, undefined, undefined, onFlushFailed);
      xs.set(peer, s);
      return s;
    });
    await x.start();
    try {
      xs.get('y')!.failing = true;
      const wy = write(x, 'y', 'y-1');
      await until('x fences y', () => x.link('y').fenced !== undefined, 5000);
      expect(x.link('y').fenced).toMatchObject({ cause: 'store-failed' });
      expect(x.link('y').fenced!.error).toMatch(/fsync: EIO/);
      expect(x.commits.storeFailures).toBe(1);
      const batches = x.commits.batches;
      const wz = write(x, 'z', 'z-1');
      await until('x-z batch durable', () => x.commits.batches > batches, 5000);
      expect(x.link('z').fenced).toBeUndefined();
      await new Promise((r) => setTimeout(r, 100));
      expect(wy.told).toEqual([]);
      if (x.link('z').pair.role === 'sequencer') expect(wz.told[0]).toMatchObject({ verdict: 'committed' });
    } finally {
      // The batch that failed acknowledged nothing: a clean stop as far as promises go (exit 0).
      expect(await x.stop()).toEqual({ storeFailures: 0 });
    }
    for (const s of xs.values()) expect(() => s.persist([])).toThrow(/closed/);
  }, 15_000);
});

describe('spookd: fsync everysec whose background flush fails', () => {
  /** A spookd (e) with two peers (f, g) configured with no endpoint: nothing but local writes and the flush timer. */
  const fsyncStores = new Map<string, FailingFsyncStore>();
  const elog: string[] = [];
  let e: Spookd;
  beforeAll(async () => {
    const k = generateKeyPair();
    writeFileSync(join(dir, 'e.key'), Buffer.from(k.privateKey).toString('base64'));
    const cfg = configSchema.parse({
      listen: `127.0.0.5:${base}`, // an address of its own: no port of the others
      privateKeyFile: join(dir, 'e.key'),
      dataDir: join(dir, 'e'),
      adminSocket: join(dir, 'e.sock'),
      fsync: 'everysec',
      peers: ['f', 'g'].map((name) => ({ name, publicKey: encodeKey(generateKeyPair().publicKey) })),
      registers: [{ name: 'config', kind: 'map' }],
    });
    const log = pino({ level: 'warn' }, { write: (s: string) => void elog.push(s) });
    e = new Spookd(cfg, k, log, (peer, dir, fsync, onFlushFailed) => {
      const s = new FailingFsyncStore(dir, fsync, undefined, undefined, onFlushFailed);
      fsyncStores.set(peer, s);
      return s;
    });
    await e.start();
  });

  it('fences that pair only (store-failed, not a dropped datagram); the process carries on, and stop() closes every store even when one fails to flush', async () => {
    write(e, 'f', 'f-1');
    write(e, 'g', 'g-1');
    // Once their commit pass has written them (a lease is fsynced there and then under everysec):
    // what fails is the flush of the records it left dirty.
    await new Promise((r) => setTimeout(r, 20));
    fsyncStores.get('f')!.failing = true;
    await until('e fences f', () => e.link('f').fenced !== undefined, 5000);
    expect(e.link('f').fenced).toMatchObject({ cause: 'store-failed' });
    expect(e.link('f').fenced!.error).toMatch(/fsync: EIO/);
    expect(e.link('f').pair.state).toBe('DECOHERENT');
    expect(e.link('g').fenced).toBeUndefined();
    expect(e.commits.storeFailures).toBe(1);
    expect(e.drops['internal-error'] ?? 0).toBe(0);
    // g's last writes are flushed at stop (or by the timer while it stops), and that flush fails:
    // reported once, and every store is still closed.
    write(e, 'g', 'g-2');
    fsyncStores.get('g')!.failing = true;
    // Both flushes covered acknowledged writes: the stop says so (spookd exits 74, not 0).
    expect(await e.stop()).toEqual({ storeFailures: 2 });
    expect(elog.filter((l) => l.includes('"peer":"g"') && l.includes('g/config: fsync: EIO')).length).toBe(1);
    for (const s of fsyncStores.values()) expect(() => s.persist([])).toThrow(/closed/);
  }, 15_000);
});

describe('spookd, fsync everysec: a batch whose flush before a snapshot fails', () => {
  it('fences that pair, and the stop is not reported clean (storeFailures 1: spookd exits 74)', async () => {
    const k = generateKeyPair();
    writeFileSync(join(dir, 'w.key'), Buffer.from(k.privateKey).toString('base64'));
    // A peer (no endpoint) whose pair this host sequences: its writes are collapsed here, into its log.
    let peerKey = generateKeyPair().publicKey;
    while (pairIdentity(k.publicKey, peerKey).localId >= pairIdentity(k.publicKey, peerKey).peerId) peerKey = generateKeyPair().publicKey;
    const cfg = configSchema.parse({
      listen: `127.0.0.7:${base}`,
      privateKeyFile: join(dir, 'w.key'),
      dataDir: join(dir, 'w'),
      adminSocket: join(dir, 'w.sock'),
      fsync: 'everysec',
      peers: [{ name: 'y', publicKey: encodeKey(peerKey) }],
      registers: [{ name: 'config', kind: 'map' }],
    });
    let store: FailingFsyncStore | undefined;
    const x = new Spookd(cfg, k, pino({ level: 'silent' }), (_peer, d, fsync, onFlushFailed) => {
      // A small log bound: a batch soon makes a snapshot due (written at once), which first flushes the log.
      store = new FailingFsyncStore(d, fsync, 400, undefined, onFlushFailed);
      store.backgroundSnapshotBytes = Number.MAX_SAFE_INTEGER;
      return store;
    });
    await x.start();
    let stopped: { storeFailures: number } | undefined;
    try {
      expect(x.link('y').pair.role).toBe('sequencer');
      const first = writeTold(x, 'y', 'acknowledged');
      await until('the first write committed', () => first.told.length === 1, 5000);
      expect(first.told[0]).toMatchObject({ verdict: 'committed' });
      // The log passes its bound: the batch's snapshot first fsyncs it, and that fsync fails (once).
      store!.failOnce = true;
      for (let i = 0; i < 8; i++) writeTold(x, 'y', `k${i}-${'v'.repeat(60)}`);
      await until('x fences y', () => x.link('y').fenced !== undefined, 5000);
      expect(x.link('y').fenced!.error).toMatch(/fsync: EIO/);
    } finally {
      stopped = await x.stop();
    }
    // "committed" was said of a record a failed fsync may have dropped: no clean stop.
    expect(stopped).toEqual({ storeFailures: 1 });
    expect(x.commits.storeFailures).toBe(1);
  }, 15_000);
});
