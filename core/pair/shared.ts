/**
 * The state of one register that both roles share, in one struct (as etcd raft keeps its
 * shared state in `raft` and a step function per role): committed StateBlock, delta log,
 * causal marks, own candidates and their numbering, what the peer last reported. Mutable
 * here; the replica hands it only to its role object and shows it to everyone else read-only.
 */
import type { Hash64Parts } from '../../wire/buffer.js';
import { encodedEntryDeltaLen, entryValueLen, type EntryDelta } from '../../wire/cross.js';
import { DeltaOp, REJECT_REASON_NAMES, RejectReason, type Delta, type SimpleDelta } from '../../wire/delta.js';
import { MsgType, decodeMessages, type CollapseEntry, type CollapseMsg, type StatusMsg, type VersionRange } from '../../wire/messages.js';
import { hashHex } from '../register/hash.js';
import { MapState } from '../register/map.js';
import { StreamState } from '../register/stream.js';
import { Deque } from '../util/deque.js';
import type { OwnOutcome, ReentangleMethod } from './events.js';
import { OwnOutcomes } from './outcomes.js';
import { PairState } from './lifecycle.js';
import { DeltaLog } from './log.js';
import type { PayloadBuilder } from './payload.js';
import type { OwnCandidate, PairContext, PairRole, RegisterConfig, RegisterMessage } from './types.js';

/** Collapse records in flight beyond the peer's acknowledged version. */
export const SEND_WINDOW = 256;
/** Propose datagrams a follower keeps in flight per register (§7.5), as the sequencer's send window. */
export const PROPOSE_WINDOW = 256;
/** Own sequence numbers are leased in blocks so a restart never reuses one. */
export const SEQ_LEASE = 1024;
/**
 * Versions applied in order whose acknowledging Status may wait for a datagram to ride (§9.1);
 * at this many it goes at once, so a burst (a re-entanglement's replay) keeps the send window open.
 */
export const STATUS_EVERY_VERSIONS = 16;

/**
 * A register's timers (named as quinn-proto's connection/timer.rs names its own), each role's
 * in the order its handleTimeout fires them:
 * - retransmit: what was sent is unacknowledged after an RTO (sequencer: collapsed versions;
 *   follower: proposals, not polled while a reconciliation runs, since fill sends none then);
 * - recon-work: the sequencer's reconciliation responder continues its sliced work (chunking a pin);
 * - recon-start: the follower's held-back reconciliation may send its first request;
 * - recon-retransmit: the follower's reconciliation requests went unanswered for an RTO.
 */
export const SEQUENCER_TIMERS = ['recon-work', 'retransmit'] as const;
export const FOLLOWER_TIMERS = ['retransmit', 'recon-start', 'recon-retransmit'] as const;
export type SequencerTimer = (typeof SEQUENCER_TIMERS)[number];
export type FollowerTimer = (typeof FOLLOWER_TIMERS)[number];
export type RegisterTimer = SequencerTimer | FollowerTimer;

/** One role's half of a replica: how the sequencer (sequencer.ts) or the follower (follower.ts) steps. */
export interface RoleMachine {
  readonly role: PairRole;
  /** Whether local writes are refused while the pair is not coherent (the follower's `freeze` policy). */
  readonly freezesWhenIncoherent: boolean;
  /** Whether reconciliation or a full transfer is under way (the follower requesting). */
  readonly reconciling: boolean;
  /** A new own candidate, numbered and copied, just before it joins the own list; `stamp` orders it across registers. */
  queueOwn(seq: number, delta: EntryDelta, stamp: number): void;
  /** Own candidates taken back after a restart (already in the own list). */
  restored(added: readonly OwnCandidate[]): void;
  /**
   * Own candidate `c`, without an outcome yet, is about to be reported pending: record it durably
   * unless it already is (a follower's is from the start). Returns whether it recorded a write.
   */
  secureOwn(c: OwnCandidate): boolean;
  /** A Collapse record replayed at a restart (state and marks already updated by the replica). */
  replayed(entries: readonly CollapseEntry[]): void;
  /** Turn pending candidates into committed versions; returns versions made (the follower makes none). */
  collapse(now: number): number;
  handle(now: number, m: RegisterMessage, raw: Uint8Array): void;
  /** The pair heard its peer after decoherence (or formed misaligned). */
  beginReentangle(): void;
  /** Whether this register has reached the re-entanglement target. */
  aligned(): boolean;
  /** Whether the peer confirmed everything (own candidates aside, which the replica checks). */
  settled(): boolean;
  status(): StatusMsg;
  /** Each armed timer's deadline (ms). */
  deadlines(): Partial<Record<RegisterTimer, number>>;
  /** Fire the due timers in the role's order; true if a retransmission timer fired. */
  handleTimeout(now: number): boolean;
  /**
   * Nothing to send, collapse or time, and settled (own candidates aside, which the replica
   * checks): until an input reaches the register, its fill, handleTimeout and collapse do nothing.
   */
  idle(): boolean;
  /** Add this role's messages (beyond the Status) to the datagram being built. */
  fill(now: number, b: PayloadBuilder): void;
  /** Whether `fill` now sends a request that starts a reconciliation session (it goes after a Status, §8.2). */
  startsSession(now: number): boolean;
}

export class Shared {
  state: MapState | StreamState;
  version = 0;
  readonly log: DeltaLog;
  /** Causal marks: per origin, the highest candidate sequence already decided. Identical at both ends after each collapse. Set through mark(). */
  readonly origins = new Map<number, number>();
  /** Own candidates awaiting their outcome, in sequence order (add and take them through pushOwn/shiftOwn). */
  readonly own = new Deque<OwnCandidate>();
  /** Value bytes of the own candidates (ownBytesLimit bounds them: memory a local writer makes us hold). */
  ownBytes = 0;
  /** Encoded delta octets of the own candidates, ~ what a store's pending list of them holds (it rewrites by this). */
  ownDeltaBytes = 0;
  nextSeq = 1;
  leasedSeq = 0;
  resolvedSeq = 0;
  /** What the peer last told us (its Status). */
  peerVersion = -1;
  peerHash: Hash64Parts | undefined;
  /** The Status goes out in the next datagram. */
  statusDirty = true;
  /**
   * The Status acknowledges versions applied in order: it rides the next datagram that goes
   * anyway, or leaves with the Ack at its deadline (maxAckDelayMs), as a QUIC ACK frame does (§9.1).
   */
  statusLazy = false;
  /** Versions applied since the last Status went (acknowledgeLater). */
  private versionsOwed = 0;
  /** Version both ends must reach before this register counts as re-entangled. */
  reentangleTarget: number | undefined;
  reentangleMethod: ReentangleMethod = 'log';
  /**
   * Own txn candidates rejected by a failed guard: seq → the index of the op that failed, found
   * where collapse decides (sequencer) or applies (follower) it, against the state just before
   * that entry. Read once when the outcome is told; the wire carries only the reason.
   */
  private readonly failedOps = new Map<number, number>();
  /** UTF-8 length of the name, for packing estimates. */
  readonly nameBytes: number;
  /** Own candidates' outcomes, told or replayed (the `outcome` query). */
  readonly outcomes = new OwnOutcomes();

  constructor(
    readonly cfg: RegisterConfig,
    readonly pair: PairContext,
  ) {
    this.state = cfg.kind === 'map' ? new MapState(pair.seed) : new StreamState(pair.seed);
    this.log = new DeltaLog(cfg.log);
    this.log.reset(0, this.state.hash);
    this.nameBytes = new TextEncoder().encode(cfg.name).length;
  }

  get name(): string {
    return this.cfg.name;
  }

  /** After a restart: own sequence numbers continue above everything leased or decided before. */
  continueSeqAfter(leasedSeq: number): void {
    this.nextSeq = Math.max(this.nextSeq, leasedSeq + 1, (this.origins.get(this.pair.localId) ?? 0) + 1);
    this.leasedSeq = Math.max(this.leasedSeq, leasedSeq);
    this.resolvedSeq = this.nextSeq - 1;
  }

  status(logBase: number, held: VersionRange[]): StatusMsg {
    return {
      type: MsgType.Status,
      register: this.name,
      version: this.version,
      hash: { hi: this.state.hash.hi, lo: this.state.hash.lo },
      logBase,
      resolvedSeq: this.resolvedSeq,
      held,
    };
  }

  /** A version was applied in order: owe the Status that acknowledges it, lazily (at once every STATUS_EVERY_VERSIONS). */
  acknowledgeLater(): void {
    this.statusLazy = true;
    if (++this.versionsOwed >= STATUS_EVERY_VERSIONS) this.statusDirty = true;
  }

  /** The Status went out: nothing is owed. */
  statusSent(): void {
    this.statusDirty = false;
    this.statusLazy = false;
    this.versionsOwed = 0;
  }

  /** A collapse was committed or applied: report it and the outcomes of own candidates it decided. */
  afterCollapse(now: number, v: number, entries: readonly CollapseEntry[]): void {
    this.pair.emit({ type: 'collapse', at: now, register: this.name, version: v, hash: hashHex(this.state.hash), entries });
    this.resolveOwnIn(now, v, entries);
  }

  /**
   * afterCollapse with the entries decoded from `encoded` (the record, one Collapse message) only
   * when read: by the event's reader, or here if `own` (some entry is ours).
   */
  afterCollapseLazy(now: number, v: number, encoded: Uint8Array, own: boolean): void {
    const ev = new LazyCollapseEvent(now, this.name, v, hashHex(this.state.hash), encoded);
    this.pair.emit(ev);
    if (own) this.resolveOwnIn(now, v, ev.entries);
  }

  private resolveOwnIn(now: number, v: number, entries: readonly CollapseEntry[]): void {
    for (const e of entries) {
      // A part of a cross-register txn is numbered in its anchor register: its outcome is told there.
      if (e.origin === this.pair.localId && !isPart(e))
        this.resolveOwn(now, e.seq, e.verdict === 'committed' ? COMMITTED : this.rejected(e.seq, e.reason), v);
    }
  }

  /**
   * An own candidate `seq` is rejected for `reason` here: if it is a txn whose guard failed,
   * remember which op. A cross-register txn's failing op is found where it is decided (cross.ts).
   */
  /**
   * Sets `origin`'s causal mark. A pair has two origins, its two ends: a live record naming
   * another is refused (`invalid-record`, rev 1.34), and one in an older log, a snapshot or a
   * reconciliation's marks is skipped, so a peer cannot make this map hold more than two.
   */
  mark(origin: number, seq: number): void {
    if (origin === this.pair.localId || origin === this.pair.peerId) this.origins.set(origin, seq);
  }

  noteFailedOp(seq: number, reason: RejectReason, crossOp?: number): void {
    if (reason === RejectReason.QuotaExceeded) return; // the whole txn is over the quota, no one op
    // Entries of candidates decided without a told outcome (a reconciliation) go: at most maxPending stay.
    for (const q of this.failedOps.keys()) if (q <= this.resolvedSeq) this.failedOps.delete(q);
    if (crossOp !== undefined) {
      this.failedOps.set(seq, crossOp);
      return;
    }
    let c: OwnCandidate | undefined;
    for (const o of this.own) if (o.seq === seq) c = o;
    if (c === undefined || c.delta.op !== DeltaOp.Txn) return;
    const f = this.state.txnFailure(c.delta.ops);
    if (f) this.failedOps.set(seq, f.op);
  }

  /** Tell the proposer how one of its candidates ended (and keep it for a later `outcome` query). */
  emitOutcome(now: number, seq: number, outcome: OwnOutcome, version: number): void {
    this.outcomes.note(seq, outcome, version);
    this.pair.emit({ type: 'outcome', at: now, register: this.name, origin: this.pair.localId, seq, ...outcome, version });
  }

  private rejected(seq: number, reason: RejectReason): OwnOutcome {
    const op = this.failedOps.get(seq);
    this.failedOps.delete(seq);
    return { verdict: 'rejected', reason: REJECT_REASON_NAMES[reason], ...(op !== undefined ? { op } : {}) };
  }

  pushOwn(c: OwnCandidate): void {
    this.own.push(c);
    this.ownBytes += entryValueLen(c.delta);
    this.ownDeltaBytes += encodedEntryDeltaLen(c.delta);
  }

  shiftOwn(): OwnCandidate | undefined {
    const c = this.own.shift();
    if (c) {
      this.ownBytes -= entryValueLen(c.delta);
      this.ownDeltaBytes -= encodedEntryDeltaLen(c.delta);
    }
    return c;
  }

  private resolveOwn(now: number, seq: number, outcome: OwnOutcome, version: number): void {
    // Own candidates resolve in sequence order; anything at or below `seq` still listed was decided earlier.
    while (this.own.length > 0 && this.own.peek()!.seq <= seq) {
      const c = this.shiftOwn()!;
      this.emitOutcome(now, c.seq, c.seq === seq ? outcome : COMMITTED, version);
    }
    this.resolvedSeq = Math.max(this.resolvedSeq, seq);
    // A record deciding a number we have not used yet (a sequencer that lied, or our lost data): never
    // use it, else the candidate that gets it counts as resolved and is never proposed (the lease logic persists the jump).
    if (this.nextSeq <= seq) this.nextSeq = seq + 1;
  }

  /** Whether the pair is in a state where data (beyond a Status) goes to the peer. */
  get reachable(): boolean {
    const st = this.pair.state;
    return st !== PairState.DECOHERENT && st !== PairState.CLOSED && st !== PairState.FORMING;
  }
}

export const COMMITTED: OwnOutcome = { verdict: 'committed' };

/** A collapse event whose entries are decoded the first time they are read (a class: one is made per record applied). */
class LazyCollapseEvent {
  readonly type = 'collapse';
  /** The record until its entries are read, then the entries (no closure: events may queue by the thousand). */
  #entries: readonly CollapseEntry[] | Uint8Array;

  constructor(
    readonly at: number,
    readonly register: string,
    readonly version: number,
    readonly hash: string,
    encoded: Uint8Array,
  ) {
    this.#entries = encoded;
  }

  get entries(): readonly CollapseEntry[] {
    const e = this.#entries;
    if (!(e instanceof Uint8Array)) return e;
    const entries = (decodeMessages(e).messages[0] as CollapseMsg).entries;
    this.#entries = entries;
    return entries;
  }
}

/** Whether an entry is a part of a cross-register txn (op 7): it updates neither marks nor outcomes here. */
export const isPart = (e: CollapseEntry): boolean => e.verdict === 'committed' && e.delta.op === DeltaOp.Part;

/** An entry delta that owns its bytes: a cross-register txn's parts copied one by one. */
export function copyEntryDelta(d: EntryDelta): EntryDelta {
  if (d.op === DeltaOp.Cross)
    return { op: d.op, parts: d.parts.map((p) => ({ register: p.register, at: p.at, delta: copyDelta(p.delta) })) };
  if (d.op === DeltaOp.Part) return { op: d.op, anchor: d.anchor, anchorVersion: d.anchorVersion, delta: copyDelta(d.delta) };
  return copyDelta(d);
}

/** A delta that owns its bytes (callers and received payloads may reuse theirs). */
export function copyDelta(d: Delta): Delta {
  switch (d.op) {
    case DeltaOp.Set:
      return { op: d.op, key: d.key.slice(), value: d.value.slice() };
    case DeltaOp.Del:
      return { op: d.op, key: d.key.slice() };
    case DeltaOp.Cas:
      return { op: d.op, key: d.key.slice(), expect: d.expect, value: d.value.slice() };
    case DeltaOp.Append:
      return { op: d.op, offset: d.offset, data: d.data.slice() };
    case DeltaOp.Txn:
      return { op: d.op, ops: d.ops.map((o) => copyDelta(o) as SimpleDelta) };
  }
}
