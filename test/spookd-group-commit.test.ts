import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { inProcess, until, writeTold } from './inproc.js';
import { portBase } from './ports.js';
import { HoldStore, sequencingPair } from './hold-store.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { configSchema } from '../drivers/daemon/config.js';
import { Spookd } from '../drivers/daemon/spookd.js';
import { encodeKey } from '../drivers/daemon/keys.js';
import { StoreError, type FsyncPolicy } from '../drivers/store/store.js';
import { generateKeyPair, type KeyPair } from '../crypto/primitives.js';
import { pairIdentity } from '../core/etcp/endpoint.js';
import { HalfPair } from '../core/pair/halfpair.js';
import { pairHandlers } from '../drivers/admin/pair.js';
import { set } from './helpers.js';

/**
 * Group commit off the event loop (drivers/daemon/spookd.ts, PROTOCOL.md §10.1 rev 1.21): the
 * edges of a batch whose fsyncs run on libuv's thread pool, held with HoldStore.
 */
const base = portBase('spookd-group-commit.test.ts');
const call = { onClose: () => {} } as never;

/** A key pair whose pair with `peer` this side sequences (the lower key: local id 1). */
function sequencerKey(peer: Uint8Array): KeyPair {
  let k = generateKeyPair();
  while (pairIdentity(k.publicKey, peer).localId !== 1) k = generateKeyPair();
  return k;
}

describe('spookd alone: a sequencer whose peer is not there (local writes only)', () => {
  const dir = mkdtempSync(join(tmpdir(), 'spook-gc-'));
  const stores = new Map<string, HoldStore>();
  const peerKey = generateKeyPair().publicKey;
  const k = sequencerKey(peerKey);
  let x: Spookd;
  let stopped = false;
  beforeAll(async () => {
    writeFileSync(join(dir, 'x.key'), Buffer.from(k.privateKey).toString('base64'));
    const cfg = configSchema.parse({
      listen: `127.0.0.7:${base}`,
      privateKeyFile: join(dir, 'x.key'),
      dataDir: join(dir, 'x'),
      adminSocket: join(dir, 'x.sock'),
      fsync: 'always',
      peers: [{ name: 'p', publicKey: encodeKey(peerKey) }],
      registers: [{ name: 'config', kind: 'map' }],
    });
    x = new Spookd(cfg, k, pino({ level: 'silent' }), (peer: string, d: string, fsync: FsyncPolicy, onFlushFailed) => {
      const s = new HoldStore(d, fsync, undefined, undefined, onFlushFailed);
      stores.set(peer, s);
      return s;
    });
    await x.start();
    expect(x.link('p').pair.role).toBe('sequencer');
  });
  afterAll(async () => {
    for (const s of stores.values()) s.release();
    if (!stopped) await x.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a write made while the last batch syncs is decided as soon as that batch is released (not at the next pair timer)', async () => {
    const s = stores.get('p')!;
    s.hold = true;
    const w1 = writeTold(x, 'p', 'k1');
    await until('batch 1 syncing', () => s.held.length > 0);
    const w2 = writeTold(x, 'p', 'k2');
    await new Promise((r) => setTimeout(r, 50)); // its pass runs, and skips the pair
    expect(w1.told).toEqual([]);
    expect(w2.told).toEqual([]);
    // A read of what batch 1 decided waits for it (the sequencer could decide otherwise after a crash).
    let read: { found: boolean } | undefined;
    void Promise.resolve(pairHandlers(x).get({ peer: 'p', register: 'config', key: 'k1' } as never, call)).then(
      (r) => (read = r as { found: boolean }),
    );
    await new Promise((r) => setTimeout(r, 50));
    expect(read).toBeUndefined();
    const t0 = Date.now();
    s.release();
    await until('both writes told', () => w1.told.length === 1 && w2.told.length === 1, 5000);
    // Before the fix, w2 waited for the pair's keepalive timer (~1 s): nothing else collapsed it.
    expect(Date.now() - t0).toBeLessThan(500);
    expect(w1.told[0]).toMatchObject({ verdict: 'committed' });
    expect(w2.told[0]).toMatchObject({ verdict: 'committed' });
    await until('the read answered', () => read !== undefined);
    expect(read!.found).toBe(true);
  });

  it('a write that times out is said "pending" only once it is durable (a crash before would lose it)', async () => {
    const s = stores.get('p')!;
    s.hold = true;
    const w1 = writeTold(x, 'p', 'k-pending-0');
    await until('batch syncing', () => s.held.length > 0);
    let answer: { verdict: string } | undefined;
    // Proposed while a batch syncs: its collapse waits for the next batch, which waits for this one.
    void Promise.resolve(
      pairHandlers(x).set({ peer: 'p', register: 'config', key: 'k-pending', value: 'v', timeoutMs: 0 } as never, call),
    ).then((r) => (answer = r as { verdict: string }));
    await new Promise((r) => setTimeout(r, 100));
    expect(answer).toBeUndefined();
    s.release();
    await until('answered', () => answer !== undefined && w1.told.length === 1);
    // Its outcome left with the batch that made it durable, ahead of the waiter: committed, not pending.
    expect(answer!.verdict).toBe('committed');
  });

  it('stop() waits for a batch syncing, answers it, and closes every store', async () => {
    const s = stores.get('p')!;
    s.hold = true;
    const w = writeTold(x, 'p', 'k3');
    await until('batch syncing', () => s.held.length > 0);
    const stopping = x.stop().then(() => (stopped = true));
    await new Promise((r) => setTimeout(r, 100));
    expect(stopped).toBe(false);
    s.release();
    await stopping;
    expect(w.told[0]).toMatchObject({ verdict: 'committed' });
    expect(x.commits.syncing).toBe(0);
    expect(() => s.persist([])).toThrow(/closed/);
  });
});

describe('DiskStore: a batch synced off the event loop', () => {
  const KV = [{ name: 'kv', kind: 'map' as const }];
  const open = (d: string): { store: HoldStore; pair: HalfPair } => {
    const store = new HoldStore(d, 'always');
    const pair = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 77, registers: KV, writes: 'driver' }, 0);
    for (const r of pair.registers.values()) store.load(r);
    return { store, pair };
  };

  it('refuses to close while syncing (a store loaded from its directory then must not meet its files), and closes once it settled', async () => {
    const d = mkdtempSync(join(tmpdir(), 'spook-gc-store-'));
    try {
      const a = open(d);
      a.store.hold = true;
      a.pair.propose(0, 'kv', set('p', '1'));
      const sync = a.store.syncAll(a.store.write(a.pair.pollWrites()));
      expect(() => a.store.write([])).toThrow(/being synced/);
      expect(() => a.store.close({ abandonPending: true })).toThrow(StoreError);
      a.store.release();
      await sync;
      a.pair.writesDurable();
      a.store.close({ abandonPending: true });
      // Abandoned at close: the next load proposes nothing again; a candidate made then survives a restart.
      const b = open(d);
      expect(b.pair.register('kv').ownCandidates()).toEqual([]);
      b.pair.propose(0, 'kv', set('q', '2'));
      b.store.persist(b.pair.pollWrites());
      b.pair.writesDurable();
      b.store.close();
      const c = open(d);
      expect(c.pair.register('kv').ownCandidates().length).toBe(1);
      c.store.close();
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });

  it('settles only once every fsync of the batch has, even when one fails first', async () => {
    const d = mkdtempSync(join(tmpdir(), 'spook-gc-store-'));
    class FailFirst extends HoldStore {
      calls = 0;
      protected syncFdAsync(fd: number): Promise<void> {
        return this.calls++ === 0 ? Promise.reject(new Error('EIO (injected)')) : super.syncFdAsync(fd);
      }
    }
    try {
      const store = new FailFirst(d, 'always');
      const registers = [...KV, { name: 'kv2', kind: 'map' as const }];
      const pair = new HalfPair({ pairId: 1, localId: 2, peerId: 1, seed: 77, registers, writes: 'driver' }, 0);
      for (const r of pair.registers.values()) store.load(r);
      store.hold = true;
      pair.propose(0, 'kv', set('p', '1'));
      pair.propose(0, 'kv2', set('p', '1')); // a pending record in each register's file: two fsyncs
      const fds = store.write(pair.pollWrites());
      expect(fds.length).toBeGreaterThan(1);
      let failed: unknown;
      const sync = store.syncAll(fds).catch((e) => (failed = e));
      await new Promise((r) => setTimeout(r, 50));
      // The first fsync failed at once; the others are still held: the store may not close yet.
      expect(failed).toBeUndefined();
      expect(() => store.close()).toThrow(/being synced/);
      store.release();
      await sync;
      expect(failed).toBeInstanceOf(StoreError);
      expect(String(failed)).toMatch(/fsync: EIO/);
      store.close();
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});

describe('spookd: a peer removed while its pair keeps writing', () => {
  // a sequences the pair: its writes are collapsed (and read back) at a.
  const { d, stores } = sequencingPair(inProcess('spook-gc-remove', ['a', 'c'], base + 1));

  it('leaves no batch syncing: what is written during the goodbye is fsynced at once, read durable, and the store closes', async () => {
    const s = stores.get('a-c')!;
    expect(d.a.link('c').pair.role).toBe('sequencer');
    // The goodbye's send callback comes late: a window in which inputs run their commit passes.
    const sock = (d.a as unknown as { socket: { send: (...a: unknown[]) => unknown } }).socket;
    const send = sock.send.bind(sock);
    sock.send = (...args: unknown[]) => {
      const cb = args[args.length - 1];
      if (typeof cb === 'function') args[args.length - 1] = () => setTimeout(cb as () => void, 300);
      return send(...args);
    };
    const first = writeTold(d.a, 'c', 'before-removal');
    await until('a first write committed', () => first.told.length > 0);
    // Any fsync sent to the thread pool from here would wait in `held`.
    s.hold = true;
    const removed = d.a.removePeer('c');
    await new Promise((r) => setTimeout(r, 50));
    const during = writeTold(d.a, 'c', 'during-goodbye');
    let read: { found?: boolean } | undefined;
    void Promise.resolve(pairHandlers(d.a).get({ peer: 'c', register: 'config', key: 'during-goodbye' } as never, call)).then(
      (r) => (read = r as { found: boolean }),
      () => (read = {}),
    );
    await removed;
    sock.send = send;
    expect(d.a.commits.syncing).toBe(0);
    expect(s.held).toEqual([]); // nothing went to the thread pool once the removal began
    expect(during.told.length === 0 || during.told[0].type === 'outcome').toBe(true);
    await until('the read answered', () => read !== undefined);
    expect(() => s.persist([])).toThrow(/closed/);
  }, 20_000);
});
