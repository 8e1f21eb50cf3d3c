/** Stores for the group commit tests (spookd's fsyncs off the event loop, PROTOCOL.md §10.1 rev 1.21). */
import { Spookd } from '../drivers/daemon/spookd.js';
import { DiskStore, type FsyncPolicy } from '../drivers/store/store.js';
import { configOf, logOf, type InProcess } from './inproc.js';

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
