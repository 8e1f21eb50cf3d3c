/**
 * The simulator's and the tests' domain store: a DomainImage in memory, where a "crash"
 * drops the node object and keeps the store. It can be told to fail (storage faults, as
 * TigerBeetle's simulated storage): a failing persist makes durable only a prefix of the
 * batch, as a write that dies part way through would, then throws.
 */
import { DomainImage, type DomainStore, type DomainWrite, type StoredDomain } from '../../core/qn/persist.js';

export class MemDomainStore implements DomainStore {
  readonly image = new DomainImage();
  /** Batches persisted. */
  writes = 0;
  /** Before each batch: how many of its writes to keep before failing, or undefined to succeed. */
  fault: ((batch: readonly DomainWrite[]) => number | undefined) | undefined;

  load(): StoredDomain {
    return this.image.load();
  }

  persist(writes: readonly DomainWrite[]): void {
    const keep = this.fault?.(writes);
    const n = keep === undefined ? writes.length : Math.min(keep, writes.length);
    for (let i = 0; i < n; i++) this.image.apply(writes[i]);
    if (keep !== undefined) throw new Error(`simulated storage fault after ${n} of ${writes.length} writes`);
    this.writes++;
  }

  /** Shorthands for tests that prepare a store by hand. */
  get entries(): DomainImage['entries'] {
    return this.image.entries;
  }

  get base(): number {
    return this.image.base;
  }
}
