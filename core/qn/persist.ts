/**
 * The persistence boundary of a QN member (etcd raft's Ready): the writes a member asks its
 * store to make durable, what a store loads back, and DomainImage, the in-memory index of
 * that durable state that every store keeps (the file journal replays into it and rewrites
 * itself from it at compaction; the simulator's store is one image per member).
 *
 * What must survive a crash: Raft's term, vote, log and snapshot, and the candidates proposed
 * here that have no outcome yet (so each one still ends committed or rejected after a restart).
 */
import type { DomainEvent, DomainReady } from './node.js';
import type { LogEntry, NodeId, RaftStored, RaftWrite, SnapshotMeta } from './raft.js';

/** Raft's writes, and the member's own candidates kept until their outcome is applied here. */
export type DomainWrite =
  | RaftWrite
  /** An own candidate proposed here: durable before the proposer hears its sequence number. */
  | { readonly kind: 'pending'; readonly seq: number; readonly cmd: Uint8Array }
  /** Its outcome was applied here (or it can no longer have one here): forget it. */
  | { readonly kind: 'drop-pending'; readonly seq: number }
  /** Started with nothing stored: number nothing until caught up, across restarts (a 'next-seq' ends it). */
  | { readonly kind: 'behind' }
  /** Caught up after starting empty: number no own candidate below this (above an earlier life's seqs, after a wipe). */
  | { readonly kind: 'next-seq'; readonly nextSeq: number };

/** What a member's store loads: Raft's state and the own candidates still undecided. */
export interface StoredDomain extends RaftStored {
  /** The next own candidate sequence number (never reused, even for a decided one). */
  readonly nextSeq: number;
  readonly pending: readonly { seq: number; cmd: Uint8Array }[];
  /**
   * Started with nothing stored and not caught up since, over any number of restarts (what it heard
   * meanwhile is journaled, so the store is not empty any more): it numbers nothing until then.
   */
  readonly behind?: boolean;
}

/**
 * Where a driver makes a member's writes durable. `persist` returns once every write of the
 * batch is durable (as the store's fsync policy defines it) and throws if that failed: the
 * member must then be fenced, and nothing of the Ready that produced the batch may leave.
 */
export interface DomainStore {
  load(): StoredDomain;
  persist(writes: readonly DomainWrite[]): void;
}

/** A fresh member's stored state. */
export const EMPTY_STORED: StoredDomain = { term: 0, vote: 0, base: 0, baseTerm: 0, entries: [], commit: 0, nextSeq: 1, pending: [] };

/** The durable state of one member, in memory: DomainWrites applied in order. */
export class DomainImage {
  term = 0;
  vote: NodeId = 0;
  base = 0;
  baseTerm = 0;
  entries: LogEntry[] = [];
  snapshot: (SnapshotMeta & { data: Uint8Array }) | undefined;
  readonly pending = new Map<number, Uint8Array>();
  nextSeq = 1;
  /** Last commit index saved (0: none). */
  commit = 0;
  /** Octets of the entries' and pending candidates' commands the image holds (what a rewrite of the journal must carry). */
  cmdBytes = 0;
  /** StoredDomain.behind: a 'behind' write not followed by a 'next-seq'. */
  behind = false;

  /** Throws if `w` does not follow from the image (an append that leaves a gap): a corrupt journal, or a bug. */
  apply(w: DomainWrite): void {
    switch (w.kind) {
      case 'hard':
        this.term = w.term;
        this.vote = w.vote;
        return;
      case 'append':
        for (const e of w.entries) {
          if (e.index !== this.base + this.entries.length + 1)
            throw new Error(`append of index ${e.index} after ${this.base + this.entries.length}`);
          this.entries.push(e);
          this.cmdBytes += e.cmd.length;
        }
        return;
      case 'truncate':
        this.dropEntries(Math.max(0, w.from - this.base - 1), this.entries.length);
        this.entries.length = Math.max(0, w.from - this.base - 1);
        return;
      case 'snapshot':
        this.snapshot = { ...w.meta, members: [...w.meta.members], data: w.data };
        return;
      case 'snapshot-begin':
        // Nothing durable yet: the store applies a 'snapshot' of its own once the file is written.
        return;
      case 'compact':
        this.dropEntries(0, w.reset ? this.entries.length : Math.min(this.entries.length, w.base - this.base));
        this.entries = w.reset ? [] : this.entries.slice(w.base - this.base);
        this.base = w.base;
        this.baseTerm = w.baseTerm;
        return;
      case 'commit':
        this.commit = w.index;
        return;
      case 'pending':
        this.cmdBytes += w.cmd.length - (this.pending.get(w.seq)?.length ?? 0);
        this.pending.set(w.seq, w.cmd);
        this.raiseNextSeq(w.seq + 1);
        return;
      case 'drop-pending':
        this.cmdBytes -= this.pending.get(w.seq)?.length ?? 0;
        this.pending.delete(w.seq);
        return;
      case 'next-seq':
        this.raiseNextSeq(w.nextSeq);
        this.behind = false;
        return;
      case 'behind':
        this.behind = true;
        return;
    }
  }

  /** The commands of entries [from, to) leave the image (a truncation, a compaction): O(entries dropped). */
  private dropEntries(from: number, to: number): void {
    for (let i = Math.max(0, from); i < to; i++) this.cmdBytes -= this.entries[i].cmd.length;
  }

  raiseNextSeq(next: number): void {
    this.nextSeq = Math.max(this.nextSeq, next);
  }

  load(): StoredDomain {
    return {
      term: this.term,
      vote: this.vote,
      snapshot: this.snapshot,
      base: this.base,
      baseTerm: this.baseTerm,
      entries: this.entries.slice(),
      commit: this.commit,
      nextSeq: this.nextSeq,
      pending: [...this.pending].map(([seq, cmd]) => ({ seq, cmd })),
      behind: this.behind,
    };
  }
}

/**
 * A synchronous driver's Ready loop: each Ready's writes go to `store`, and only once they
 * are durable are its events published and its messages sent, then it is advanced. A store
 * that throws fences the member (nothing of that Ready leaves; the fence's own event does);
 * the error is returned.
 */
export function driveReady(
  node: { ready(): DomainReady | undefined; advance(): void; fence(cause: string): void },
  store: DomainStore,
  send: (to: NodeId, bytes: Uint8Array) => void,
  publish: (ev: DomainEvent) => void,
): Error | undefined {
  let failed: Error | undefined;
  for (let r = node.ready(); r; r = node.ready()) {
    if (r.writes.length > 0) {
      try {
        store.persist(r.writes);
      } catch (e) {
        failed = e instanceof Error ? e : new Error(String(e));
        node.fence(`durable storage failed: ${failed.message}`);
        continue;
      }
    }
    node.advance();
    for (const ev of r.events) publish(ev);
    for (const m of r.messages) send(m.to, m.bytes);
  }
  return failed;
}
