/**
 * The simulator's and the tests' domain store: a DomainImage in memory, where a "crash"
 * drops the node object and keeps the store. It can be told to fail (storage faults, as
 * TigerBeetle's simulated storage): a failing persist makes durable only a prefix of the
 * batch, as a write that dies part way through would, then throws.
 *
 * Background snapshots ('snapshot-begin') wait in `jobs` until the driver completes one
 * (completeJob, encoding it from its pin then, as a file store reads it slice by slice while
 * the member goes on) or a crash drops them (dropJobs).
 */
import { DomainImage, type DomainStore, type DomainWrite, type StoredDomain } from '../../core/qn/persist.js';
import type { SnapshotMeta } from '../../core/qn/raft.js';
import type { PinnedSnapshot } from '../../core/register/slices.js';
import { Writer } from '../../wire/buffer.js';

export class MemDomainStore implements DomainStore {
  readonly image = new DomainImage();
  /** Batches persisted. */
  writes = 0;
  /** Before each batch: how many of its writes to keep before failing, or undefined to succeed. */
  fault: ((batch: readonly DomainWrite[]) => number | undefined) | undefined;
  /** Background snapshots asked for and not written yet, oldest first. */
  readonly jobs: { meta: SnapshotMeta; pinned: PinnedSnapshot }[] = [];

  load(): StoredDomain {
    return this.image.load();
  }

  persist(writes: readonly DomainWrite[]): void {
    const keep = this.fault?.(writes);
    const n = keep === undefined ? writes.length : Math.min(keep, writes.length);
    for (let i = 0; i < n; i++) {
      const w = writes[i];
      if (w.kind === 'snapshot-begin') this.jobs.push({ meta: w.meta, pinned: w.pinned });
      else if (w.kind === 'snapshot') this.dropJobs(); // an install supersedes them (as the file store cancels its job)
      this.image.apply(w);
    }
    if (keep !== undefined) throw new Error(`simulated storage fault after ${n} of ${writes.length} writes`);
    this.writes++;
  }

  /** Write the oldest background snapshot: durable from now on. Its meta and bytes, or undefined if none waits. */
  completeJob(): { meta: SnapshotMeta; data: Uint8Array } | undefined {
    const j = this.jobs.shift();
    if (!j) return undefined;
    // A slice at a time, as the file store writes them (each call appends about one slice).
    const parts: Uint8Array[] = [];
    for (let more = true; more;) {
      const w = new Writer(1 << 12);
      more = j.pinned.slices(w);
      parts.push(w.finish());
    }
    const data = Buffer.concat(parts);
    this.image.apply({ kind: 'snapshot', meta: j.meta, data });
    return { meta: j.meta, data };
  }

  /** A crash, a failed write or an install: the background snapshots under way are gone. Their metas. */
  dropJobs(): SnapshotMeta[] {
    const metas = this.jobs.map((j) => j.meta);
    for (const j of this.jobs) j.pinned.release();
    this.jobs.length = 0;
    return metas;
  }

  /** Shorthands for tests that prepare a store by hand. */
  get entries(): DomainImage['entries'] {
    return this.image.entries;
  }

  get base(): number {
    return this.image.base;
  }
}
