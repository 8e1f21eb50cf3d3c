/**
 * What a QN member keeps across crashes: Raft's term, vote, log and snapshot, and the
 * candidates proposed here that have no outcome yet (so each one still ends committed or
 * rejected after a restart). MemDisk holds them in memory for the simulator and tests,
 * where a "crash" drops the node object and keeps its disk.
 */
import type { LogEntry, NodeId, RaftDisk, SnapshotMeta } from './raft.js';

export interface DomainDisk extends RaftDisk {
  loadPending(): { nextSeq: number; pending: { seq: number; cmd: Uint8Array }[] };
  savePending(seq: number, cmd: Uint8Array): void;
  dropPending(seq: number): void;
}

export class MemDisk implements DomainDisk {
  term = 0;
  vote: NodeId = 0;
  base = 0;
  baseTerm = 0;
  entries: LogEntry[] = [];
  snapshot: (SnapshotMeta & { data: Uint8Array }) | undefined;
  pending = new Map<number, Uint8Array>();
  nextSeq = 1;
  /** Last commit index saved (0: none). */
  commit = 0;
  writes = 0;

  load(): ReturnType<RaftDisk['load']> {
    return {
      term: this.term,
      vote: this.vote,
      snapshot: this.snapshot,
      base: this.base,
      baseTerm: this.baseTerm,
      entries: this.entries.slice(),
      commit: this.commit,
    };
  }

  saveCommit(index: number): void {
    this.commit = index;
  }

  saveHard(term: number, vote: NodeId): void {
    this.writes++;
    this.term = term;
    this.vote = vote;
  }

  append(entries: readonly LogEntry[]): void {
    this.writes++;
    for (const e of entries) {
      if (e.index !== this.base + this.entries.length + 1)
        throw new Error(`disk: append of index ${e.index} after ${this.base + this.entries.length}`);
      this.entries.push(e);
    }
  }

  truncate(from: number): void {
    this.writes++;
    this.entries.length = Math.max(0, from - this.base - 1);
  }

  saveSnapshot(meta: SnapshotMeta, data: Uint8Array): void {
    this.writes++;
    this.snapshot = { ...meta, members: [...meta.members], data };
  }

  compact(base: number, baseTerm: number, reset: boolean): void {
    this.writes++;
    this.entries = reset ? [] : this.entries.slice(base - this.base);
    this.base = base;
    this.baseTerm = baseTerm;
  }

  loadPending(): { nextSeq: number; pending: { seq: number; cmd: Uint8Array }[] } {
    return { nextSeq: this.nextSeq, pending: [...this.pending].map(([seq, cmd]) => ({ seq, cmd })) };
  }

  savePending(seq: number, cmd: Uint8Array): void {
    this.writes++;
    this.pending.set(seq, cmd);
    this.nextSeq = Math.max(this.nextSeq, seq + 1);
  }

  dropPending(seq: number): void {
    this.pending.delete(seq);
  }
}
