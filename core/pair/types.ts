/**
 * The types the register replica, its two roles and the pair share, apart from the classes
 * (so core/reconcile and the drivers see them without importing the replica).
 */
import type { RejectReason } from '../../wire/delta.js';
import type { AckMsg, CloseMsg, FragmentAckMsg, FragmentMsg, Message } from '../../wire/messages.js';
import type { MapState } from '../register/map.js';
import type { StreamState } from '../register/stream.js';
import type { RegisterKind } from '../register/state.js';
import { QUOTA_DEFAULTS, type Quota } from '../register/quota.js';
import type { SpookEvent } from './events.js';
import type { LifecycleEvent, PairState } from './lifecycle.js';
import type { PairDrop } from './drops.js';
import type { LogLimits, LogRecord } from './log.js';
import type { Replica } from './replica.js';
import type { EntryDelta } from '../../wire/cross.js';

/** A pair's two ends: the lower member id sequences every collapse, the other follows. */
export type PairRole = 'sequencer' | 'follower';
export type DecoherencePolicy = 'buffer' | 'freeze';

export interface RegisterConfig {
  name: string;
  kind: RegisterKind;
  /** What local writes do while the pair is not coherent (follower side; the sequencer keeps collapsing). */
  policy: DecoherencePolicy;
  /** Bound on own candidates awaiting their outcome. */
  maxPending: number;
  log: LogLimits;
  /** Keys and octets this register may hold, whoever wrote them; both ends configure the same (§7.8). */
  quota: Quota;
  /**
   * What the peer may make this host hold (the follower's check of the sequencer's records, §7.8),
   * when it differs from `quota`: after a quota lowered at run time (a reload), every field's
   * highest since the start, since records the sequencer decided under the old quota may still be
   * on their way (refusing them would stall the pair for good). Undefined: `quota`.
   */
  holdQuota?: Quota;
}

export const REGISTER_DEFAULTS = {
  policy: 'buffer' as DecoherencePolicy,
  maxPending: 1024,
  log: { maxRecords: 65536, maxBytes: 64 * 1024 * 1024 },
  quota: QUOTA_DEFAULTS,
};

/** The messages a register handles (Ack, Close and the fragmentation layer's are the pair's). */
export type RegisterMessage = Exclude<Message, AckMsg | CloseMsg | FragmentMsg | FragmentAckMsg>;

/** An own candidate awaiting its outcome. */
export interface OwnCandidate {
  readonly seq: number;
  /** One register's delta, or a cross-register txn anchored here (wire/cross.ts). */
  readonly delta: EntryDelta;
  /**
   * When it was proposed, in this pair's order across registers (PairContext.stamp), kept in the
   * pending file with it (rev 1.24); absent for one restored from a file written before.
   */
  readonly stamp?: number;
}

/** What a replica needs from its pair. */
export interface PairContext {
  readonly role: PairRole;
  readonly localId: number;
  readonly peerId: number;
  readonly seed: number;
  readonly state: PairState;
  rto(): number;
  /** The keepalive interval: each end sends its Statuses at least this often (§9.4). */
  readonly keepaliveMs: number;
  emit(ev: SpookEvent): void;
  /** Largest Data payload this pair sends. */
  readonly maxPayload: number;
  /** Queue a response message in the pair's bounded outbox. */
  respond(now: number, m: Message): void;
  /** A register saw a decoherence trigger while the peer is reachable. */
  trigger(now: number, event: LifecycleEvent, detail: string): void;
  countFullTransfer(): void;
  /** Drop and count something the peer sent (a closed set of reasons, PROTOCOL.md §11). */
  drop(now: number, reason: PairDrop, detail: string, n?: number): void;
  /**
   * Something to make durable before anything that depends on it leaves the host (handed over
   * when the step ends). Returns the batch it goes to (0: this pair persists nothing).
   */
  persist(w: PairWrite): number;
  /** Whether batch `batch` (a number `persist` returned) is durable. */
  durable(batch: number): boolean;
  /**
   * Another register of this pair, for cross-register txns (cross.ts); undefined if the pair has none of that name.
   * It is woken (a txn may give it work: a part to apply or to send).
   */
  sibling(name: string): Replica | undefined;
  /** Register `r` may have work: the pair's steps visit it again (active.ts). */
  wake(r: Replica): void;
  /** The next number of this pair's order of proposals and arrivals across its registers (cross-register txns, §4.6). */
  stamp(): number;
  /** Restored candidates carry stamps of the run before: the pair's next ones must come after them. */
  stampAbove(stamp: number): void;
  /** Octets every register's own pending candidates append to stream `register` (where its next append goes). */
  pendingAppendBytes(register: string): number;
}

/**
 * What a step of the pair must make durable, as data (in the spirit of etcd raft's `Ready`):
 * the core records it while it steps; the driver takes the writes (HalfPair.pollWrites),
 * makes them durable in order, in batches of its choosing, and acknowledges them
 * (writesDurable); no datagram or event of that step can be polled before.
 */
export type PairWrite =
  /** A collapse was committed (sequencer) or applied (follower). */
  | { kind: 'append'; register: string; rec: LogRecord }
  /** Reconciliation or a full transfer replaced the register's state, at `version`: snapshot it (the image is the live register). */
  | { kind: 'replaced'; image: RegisterImage; version: number }
  /** Own candidate sequence numbers up to `upTo` may now be used. */
  | { kind: 'lease'; register: string; upTo: number }
  /** An own candidate (a follower's when proposed; a sequencer's when it waits, secureOwn), to propose again after a restart until decided (§7.1). */
  | { kind: 'proposed'; register: string; seq: number; delta: EntryDelta; stamp?: number };

/** A register's committed state as a store snapshots it. */
export interface RegisterImage {
  readonly name: string;
  readonly version: number;
  readonly state: MapState | StreamState;
  readonly origins: ReadonlyMap<number, number>;
  /**
   * The sequencer's rejections of peer candidates the peer has not acknowledged (§8.5),
   * seq → reason: durable with the state, so a restart never forgets one. Absent: none.
   */
  readonly peerRejections?: ReadonlyMap<number, RejectReason>;
}

/** Where a daemon makes a register's history durable (drivers/store/store.ts). */
export interface PairStore {
  /** A collapse was committed (sequencer) or applied (follower). */
  append(register: string, rec: LogRecord): void;
  /** Reconciliation or a full transfer replaced the register's state. */
  replaced(image: RegisterImage): void;
  /** Own candidate sequence numbers up to `upTo` may now be used; a restart continues above it. */
  lease(register: string, upTo: number): void;
  /**
   * An own candidate was accepted (before the proposer hears of it): it must survive a
   * restart and be proposed again until decided (§7.1). Decided ones are forgotten when
   * the store next rewrites its list from `ownCandidates()`.
   */
  proposed(register: string, seq: number, delta: EntryDelta, stamp?: number): void;
  /** The batch of writes ends (persistWrites): work deferred until all of it is durable, such as snapshots. */
  endBatch?(): void;
  /**
   * A step's writes made durable as one batch, in place of each in turn then `endBatch` (DiskStore:
   * the registers it replaces are snapshotted last, and land together).
   */
  batch?(writes: readonly PairWrite[]): void;
}

/** Make one step's writes durable, in order, then end the batch (what it grew may be rewritten). */
export function persistWrites(store: PairStore, writes: readonly PairWrite[]): void {
  if (store.batch) return store.batch(writes);
  storeEach(store, writes);
  store.endBatch?.();
}

/** Hand each write to the store, in order, without ending the batch (the simulator's crash: what the disk kept of one). */
export function storeEach(store: PairStore, writes: readonly PairWrite[]): void {
  for (const w of writes) {
    switch (w.kind) {
      case 'append':
        store.append(w.register, w.rec);
        break;
      case 'replaced':
        store.replaced(w.image);
        break;
      case 'lease':
        store.lease(w.register, w.upTo);
        break;
      case 'proposed':
        store.proposed(w.register, w.seq, w.delta, w.stamp);
        break;
    }
  }
}
