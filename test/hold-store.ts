/** Stores for the group commit tests (spookd's fsyncs off the event loop, PROTOCOL.md §10.1 rev 1.21). */
import { afterAll, beforeAll } from 'vitest';
import { rmSync } from 'node:fs';
import { Spookd } from '../drivers/daemon/spookd.js';
import { DiskStore, type FsyncPolicy } from '../drivers/store/store.js';
import { pairIdentity } from '../core/etcp/endpoint.js';
import { PairState } from '../core/pair/lifecycle.js';
import { configOf, logOf, until, type InProcess } from './inproc.js';

/** A DiskStore whose fsyncs off the event loop wait in `held` while `hold` is set, until `release()`. */
export class HoldStore extends DiskStore {
  hold = false;
  readonly held: (() => void)[] = [];
  protected syncFdAsync(fd: number): Promise<void> {
    if (!this.hold) return super.syncFdAsync(fd);
    return new Promise((resolve, reject) => this.held.push(() => super.syncFdAsync(fd).then(resolve, reject)));
  }
  release(): void {
    this.hold = false;
    for (const f of this.held.splice(0)) f();
  }
}

/** Spookd `name` of `lab` with fsync "always", its pair stores made by `store` and kept in `stores` as `name-peer`. */
export function spookdWithStores<S extends DiskStore>(
  lab: InProcess,
  name: string,
  peers: string[],
  store: (dir: string, fsync: FsyncPolicy) => S,
  stores: Map<string, S>,
): Spookd {
  return new Spookd(configOf(lab, name, peers, { fsync: 'always' }), lab.keys[name], logOf(lab, name), (peer, dir, fsync) => {
    const s = store(dir, fsync);
    stores.set(`${name}-${peer}`, s);
    return s;
  });
}

/**
 * Spookd `a` and `c` of `lab` (started before the describe's tests, stopped after), `a`
 * sequencing their pair (the keys swapped if need be), with HoldStores kept in `stores` as
 * `a-c` and `c-a`; `make` builds one again (a restart).
 */
export function sequencingPair(lab: InProcess): {
  d: Record<string, Spookd>;
  stores: Map<string, HoldStore>;
  make: (name: string, peers: string[]) => Spookd;
} {
  const d: Record<string, Spookd> = {};
  const stores = new Map<string, HoldStore>();
  const make = (name: string, peers: string[]): Spookd =>
    spookdWithStores(lab, name, peers, (dir, fsync) => new HoldStore(dir, fsync), stores);
  beforeAll(async () => {
    if (pairIdentity(lab.keys.a.publicKey, lab.keys.c.publicKey).localId !== 1) [lab.keys.a, lab.keys.c] = [lab.keys.c, lab.keys.a];
    d.a = make('a', ['c']);
    d.c = make('c', ['a']);
    await Promise.all(Object.values(d).map((s) => s.start()));
    await until('entangled', () => d.a.link('c').pair.state === PairState.ENTANGLED && d.c.link('a').pair.state === PairState.ENTANGLED);
  }, 30_000);
  afterAll(async () => {
    for (const s of stores.values()) s.release();
    await Promise.all(Object.values(d).map((s) => s.stop()));
    rmSync(lab.dir, { recursive: true, force: true });
  });
  return { d, stores, make };
}
