/**
 * One register at one endpoint of a pair (docs/PROTOCOL.md §5-8): its committed StateBlock,
 * delta log, causal marks and own candidates (shared.ts), and the role machine that moves
 * them: the Sequencer (sequencer.ts) or the Follower (follower.ts), fixed at construction
 * by the member ids (the lower one sequences). Everything here is common to both roles;
 * what differs is the role object's. Outside the role, the state is read-only.
 *
 * Collapse shape: a per-pair sequencer. The sequencer orders every candidate, evaluates
 * preconditions, commits, and ships each collapse as a record carrying the resulting state
 * hash. The follower applies records in version order and checks the hash after each, so
 * both ends reach the same (version, hash) and reject the same candidates. Pure: no clock,
 * no I/O; `now` comes from the caller.
 */
import type { Hash64Parts } from '../../wire/buffer.js';
import { MAX_KEY_LEN } from '../../wire/constants.js';
import { entryValueLen, ownPart, validateCross, type EntryDelta } from '../../wire/cross.js';
import {
  DeltaOp,
  REJECT_REASON_NAMES,
  deltaValueLen,
  isStreamDelta,
  validateDelta,
  type Delta,
  type RejectReason,
} from '../../wire/delta.js';
import { MsgType, decodeMessages, type StatusMsg } from '../../wire/messages.js';
import { hashEquals, hashHex } from '../register/hash.js';
import type { MapState } from '../register/map.js';
import type { StreamState } from '../register/stream.js';
import { Follower } from './follower.js';
import { PairState } from './lifecycle.js';
import type { LogView } from './log.js';
import type { PayloadBuilder } from './payload.js';
import type { KeptOutcome } from './outcomes.js';
import { Sequencer } from './sequencer.js';
import { SEQ_LEASE, Shared, copyEntryDelta, isPart, type RegisterTimer } from './shared.js';
import type { OwnCandidate, PairContext, PairRole, RegisterConfig, RegisterMessage } from './types.js';

const NO_REJECTIONS: ReadonlyMap<number, RejectReason> = new Map();

/** A clear, typed refusal of a local write. */
/**
 * Value bytes own pending candidates may hold: 4 largest values, and at least 64 MiB. With the
 * count bound (maxPending) it caps what a local writer makes the register hold while the pair
 * cannot decide; one candidate is always taken.
 */
export const ownBytesLimit = (maxValueBytes: number): number => Math.max(4 * maxValueBytes, 64 * 1024 * 1024);

export class ProposeError extends Error {
  constructor(
    /** too-large: a key or value over its limit (MAX_KEY_LEN, the register's maxValueBytes); the message names it. */
    readonly code: 'buffer-full' | 'frozen' | 'invalid' | 'closed' | 'fenced' | 'register-mismatch' | 'too-large',
    message: string,
  ) {
    super(message);
    this.name = 'ProposeError';
  }
}

export class Replica {
  private readonly s: Shared;
  private readonly machine: Sequencer | Follower;

  constructor(
    cfg: RegisterConfig,
    pair: PairContext,
    /** Its place in the pair's register order (HalfPair's active set keys its registers by it). */
    readonly index: number,
  ) {
    this.s = new Shared(cfg, pair);
    this.machine = pair.role === 'sequencer' ? new Sequencer(this.s) : new Follower(this.s);
  }

  // ---------------------------------------------------------------- read-only view

  get cfg(): RegisterConfig {
    return this.s.cfg;
  }

  get name(): string {
    return this.s.name;
  }

  get role(): PairRole {
    return this.machine.role;
  }

  /** The sequencer's role object (its responder), or undefined on the follower. */
  get sequencer(): Sequencer | undefined {
    return this.machine instanceof Sequencer ? this.machine : undefined;
  }

  /** The follower's role object (its requester, install), or undefined on the sequencer. */
  get follower(): Follower | undefined {
    return this.machine instanceof Follower ? this.machine : undefined;
  }

  get state(): MapState | StreamState {
    return this.s.state;
  }

  get version(): number {
    return this.s.version;
  }

  get hash(): Hash64Parts {
    return this.s.state.hash;
  }

  get log(): LogView {
    return this.s.log;
  }

  /** Causal marks: per origin, the highest candidate sequence already decided. Identical at both ends after each collapse. */
  get origins(): ReadonlyMap<number, number> {
    return this.s.origins;
  }

  /** The peer's version and hash, as its last Status said (-1 and undefined before one). */
  get peerVersion(): number {
    return this.s.peerVersion;
  }

  get peerHash(): Hash64Parts | undefined {
    return this.s.peerHash;
  }

  /**
   * What became of own candidate `seq` (the `outcome` query): still pending here, decided (told,
   * or in the log replayed at the start: the last OUTCOMES_KEPT), or unknown: decided longer ago,
   * decided by a reconciliation or full transfer without an outcome told, or never proposed.
   */
  outcomeOf(seq: number): KeptOutcome | { verdict: 'pending' } | undefined {
    const s = this.s;
    for (const c of s.own) if (c.seq === seq) return { verdict: 'pending' };
    return s.outcomes.get(seq);
  }

  get pendingCount(): number {
    return this.s.own.length;
  }

  /** About the octets a pending list of the own candidates holds (their encoded deltas, and 32 each for the rest). */
  get pendingListBytes(): number {
    return this.s.ownDeltaBytes + 32 * this.s.own.length;
  }

  /** Whether reconciliation or a full transfer is under way (follower). */
  get reconciling(): boolean {
    return this.machine.reconciling;
  }

  /** Stream registers: the offset the next append must name. Counts own pending appends, those of cross-register txns anchored elsewhere too. */
  get nextAppendOffset(): number {
    return this.s.state.size() + this.s.pair.pendingAppendBytes(this.s.name);
  }

  /** When the oldest own candidate still without an outcome was proposed (PairContext.stamp; undefined: none). */
  get oldestOwnStamp(): number | undefined {
    return this.s.own.length > 0 ? (this.s.own.peek()!.stamp ?? 0) : undefined;
  }

  /** Octets the own pending candidates of this register append to stream `register` (theirs, or a cross txn's part). */
  ownAppendBytes(register: string): number {
    let n = 0;
    const count = (d: Delta): void => {
      if (d.op === DeltaOp.Append) n += d.data.length;
      else if (d.op === DeltaOp.Txn) for (const o of d.ops) if (o.op === DeltaOp.Append) n += o.data.length;
    };
    for (const c of this.s.own) {
      if (c.delta.op === DeltaOp.Cross) {
        for (const p of c.delta.parts) if (p.register === register) count(p.delta);
      } else if (c.delta.op !== DeltaOp.Part && register === this.s.name) count(c.delta);
    }
    return n;
  }

  // ---------------------------------------------------------------- loading (before the pair starts)

  /**
   * Load committed state before the pair starts (a snapshot from disk, or a benchmark's
   * preloaded map). The log restarts at `version`, so the peer is served from here on.
   * `rejections` is the sequencer's §8.5 list as the snapshot carried it (a follower has none).
   */
  restore(
    version: number,
    load: (state: MapState | StreamState) => void,
    origins: ReadonlyMap<number, number> = new Map(),
    leasedSeq = 0,
    rejections: ReadonlyMap<number, RejectReason> = new Map(),
  ): void {
    this.wake();
    const s = this.s;
    if (s.version !== 0 || s.own.length > 0) throw new Error(`register ${s.name}: restore() only before any collapse`);
    load(s.state);
    s.version = version;
    for (const [o, q] of origins) s.mark(o, q);
    s.log.reset(version, s.state.hash);
    s.continueSeqAfter(leasedSeq);
    if (this.machine instanceof Sequencer) this.machine.restoreRejections(rejections);
  }

  /** The sequencer's rejections of peer candidates not yet acknowledged (§8.5; empty on the follower): what a snapshot keeps. */
  get peerRejections(): ReadonlyMap<number, RejectReason> {
    return this.machine instanceof Sequencer ? this.machine.peerRejections : NO_REJECTIONS;
  }

  /** After a restart: own sequence numbers continue above everything leased or decided before. */
  continueSeqAfter(leasedSeq: number): void {
    this.wake();
    this.s.continueSeqAfter(leasedSeq);
  }

  /** Own candidates without an outcome, lowest first (what a store keeps across a restart). */
  ownCandidates(): OwnCandidate[] {
    return [...this.s.own].map((c) => ({ seq: c.seq, delta: c.delta, stamp: c.stamp }));
  }

  /**
   * After a restart (the history already loaded): take back the own candidates that were
   * pending when the daemon stopped. Those the loaded history decided are dropped (their
   * outcome was reported before); the rest are proposed again under their own sequence
   * numbers, which the sequencer deduplicates (§7.6), and are decided like any other.
   * They count as sent: the sequencer may have them.
   */
  restorePending(cands: readonly OwnCandidate[]): number {
    this.wake();
    const s = this.s;
    const mark = s.origins.get(s.pair.localId) ?? 0;
    const keep = cands.filter((c) => c.seq > mark).sort((a, b) => a.seq - b.seq);
    const added: OwnCandidate[] = [];
    for (const c of keep) {
      if (s.own.length > 0 && s.own.last()!.seq >= c.seq) continue; // duplicates in the list
      const own = { seq: c.seq, delta: c.delta, stamp: c.stamp };
      if (c.stamp !== undefined) s.pair.stampAbove(c.stamp);
      s.pushOwn(own);
      added.push(own);
    }
    if (s.own.length > 0) {
      // Not resolved: these are still to be decided (and proposed again by the follower).
      s.resolvedSeq = Math.min(s.resolvedSeq, s.own.peek()!.seq - 1);
      s.nextSeq = Math.max(s.nextSeq, s.own.last()!.seq + 1);
    }
    this.machine.restored(added);
    return s.own.length;
  }

  /**
   * Re-apply one persisted Collapse record (the encoded message) on restart, checking its
   * hash. Throws if the record does not follow the current version or does not verify.
   */
  replayRecord(raw: Uint8Array): void {
    this.wake();
    const s = this.s;
    const { messages } = decodeMessages(raw);
    const m = messages[0];
    if (messages.length !== 1 || m.type !== MsgType.Collapse) throw new Error(`register ${s.name}: log record is not one Collapse message`);
    if (m.elided) throw new Error(`register ${s.name}: log record v${m.version} leaves deltas out (a wire form, never a record)`);
    if (m.version !== s.version + 1) throw new Error(`register ${s.name}: log record v${m.version} does not follow v${s.version}`);
    const stream = s.cfg.kind === 'stream';
    for (const e of m.entries) {
      if (e.verdict === 'committed') {
        const d = ownPart(e.delta);
        // An op of the other kind: a follower before rev 1.32 skipped it and logged the record (its
        // hash that of the state without it); skipped here too, to the state it acknowledged. A
        // follower refuses such a record since (§7.4), a sequencer never commits one.
        if (isStreamDelta(d) === stream) s.state.apply(d, m.version);
      }
      if (!isPart(e)) s.mark(e.origin, e.seq);
      // Own outcomes from the history, for `outcome` after a restart (a part is told at its anchor).
      if (e.origin === s.pair.localId && !isPart(e))
        s.outcomes.note(
          e.seq,
          e.verdict === 'committed' ? { verdict: 'committed' } : { verdict: 'rejected', reason: REJECT_REASON_NAMES[e.reason] },
          m.version,
        );
    }
    s.version = m.version;
    if (!hashEquals(s.state.hash, m.hash))
      throw new Error(`register ${s.name}: replaying v${m.version} gives h=${hashHex(s.state.hash)}, the record says ${hashHex(m.hash)}`);
    s.log.append({ version: m.version, hash: m.hash, encoded: raw.slice() }, m.version);
    // The sequencer takes back its §8.5 rejections from the record (they are not kept elsewhere).
    this.machine.replayed(m.entries);
  }

  // ---------------------------------------------------------------- inputs

  propose(now: number, delta: EntryDelta): { origin: number; seq: number } {
    this.wake();
    const s = this.s;
    const st = s.pair.state;
    if (st === PairState.CLOSED) throw new ProposeError('closed', `register ${s.name}: pair is closed`);
    // A cross-register txn: each part checked against its own register (§4.6); this register is its anchor.
    const parts: { cfg: RegisterConfig; delta: Delta; freezes: boolean }[] = [];
    if (delta.op === DeltaOp.Part) throw new ProposeError('invalid', `register ${s.name}: a part (op 7) is never proposed`);
    if (delta.op === DeltaOp.Cross) {
      try {
        validateCross(delta, s.name, (name) => s.pair.sibling(name)?.cfg.quota.maxValueBytes);
      } catch (e) {
        throw new ProposeError(
          /is \d+ bytes; (the|register)/.test((e as Error).message) ? 'too-large' : 'invalid',
          `register ${s.name}: ${(e as Error).message}`,
        );
      }
      for (const p of delta.parts) {
        const r = p.register === s.name ? this : s.pair.sibling(p.register)!;
        parts.push({ cfg: r.cfg, delta: p.delta, freezes: r.machine.freezesWhenIncoherent });
      }
      const total = entryValueLen(delta);
      if (total > s.cfg.quota.maxValueBytes)
        throw new ProposeError(
          'too-large',
          `register ${s.name}: cross-register txn values total ${total} bytes; register ${s.name} limit maxValueBytes is ${s.cfg.quota.maxValueBytes}`,
        );
    } else {
      try {
        validateDelta(delta, s.cfg.quota.maxValueBytes);
      } catch (e) {
        const tooLarge = ('key' in delta && delta.key.length > MAX_KEY_LEN) || deltaValueLen(delta) > s.cfg.quota.maxValueBytes;
        throw new ProposeError(tooLarge ? 'too-large' : 'invalid', `register ${s.name}: ${(e as Error).message}`);
      }
      parts.push({ cfg: s.cfg, delta, freezes: this.machine.freezesWhenIncoherent });
    }
    for (const p of parts) {
      // A txn's ops are all of one kind (validateDelta): its first op says which.
      const first = p.delta.op === DeltaOp.Txn ? p.delta.ops[0] : p.delta;
      if ((first.op === DeltaOp.Append) !== (p.cfg.kind === 'stream')) {
        throw new ProposeError('invalid', `register ${p.cfg.name}: ${p.cfg.kind} register cannot take delta op ${DeltaOp[first.op]}`);
      }
    }
    const coherent = st === PairState.ENTANGLED || st === PairState.COLLAPSING;
    const frozen = coherent ? undefined : parts.find((p) => p.freezes);
    if (frozen) {
      throw new ProposeError('frozen', `register ${frozen.cfg.name}: frozen while the pair is ${st} (policy freeze)`);
    }
    if (s.own.length >= s.cfg.maxPending) {
      throw new ProposeError(
        'buffer-full',
        `register ${s.name}: candidate buffer full (${s.cfg.maxPending} pending, pair ${st}); retry after collapses`,
      );
    }
    const bytes = entryValueLen(delta);
    const bytesLimit = ownBytesLimit(s.cfg.quota.maxValueBytes);
    if (s.own.length > 0 && s.ownBytes + bytes > bytesLimit) {
      throw new ProposeError(
        'buffer-full',
        `register ${s.name}: pending values would hold ${s.ownBytes + bytes} bytes, over ${bytesLimit} (4 × maxValueBytes, at least 64 MiB; pair ${st}); retry after collapses`,
      );
    }
    if (s.nextSeq > Number.MAX_SAFE_INTEGER) {
      // Only a sequencer that reported an impossible mark for us gets here (§8.5): refuse, never encode it.
      throw new ProposeError('closed', `register ${s.name}: own sequence numbers exhausted (mark ${s.origins.get(s.pair.localId)})`);
    }
    const seq = s.nextSeq++;
    if (seq > s.leasedSeq) {
      s.leasedSeq = Math.min(seq + SEQ_LEASE - 1, Number.MAX_SAFE_INTEGER);
      s.pair.persist({ kind: 'lease', register: s.name, upTo: s.leasedSeq });
    }
    // Own the bytes: callers may reuse their buffers.
    const d = copyEntryDelta(delta);
    const stamp = s.pair.stamp();
    this.machine.queueOwn(seq, d, stamp);
    s.pushOwn({ seq, delta: d, stamp });
    return { origin: s.pair.localId, seq };
  }

  /**
   * Own candidate `seq` is about to be reported pending: make sure a restart proposes it again
   * until decided. Returns whether that took a write (false: decided, or already recorded).
   */
  secureOwn(seq: number): boolean {
    this.wake();
    const own = this.s.own;
    // The own list is in sequence order.
    let lo = 0;
    let hi = own.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (own.at(mid).seq < seq) lo = mid + 1;
      else hi = mid;
    }
    return lo < own.length && own.at(lo).seq === seq && this.machine.secureOwn(own.at(lo));
  }

  /** Turn pending candidates into committed versions (the sequencer; the follower makes none). Returns versions made. */
  collapse(now: number): number {
    return this.machine.collapse(now);
  }

  /** One message for this register from the peer (already decoded: hostile content, never trusted). */
  handle(now: number, m: RegisterMessage, raw: Uint8Array): void {
    this.wake();
    this.machine.handle(now, m, raw);
  }

  /** The pair heard its peer after decoherence (or formed misaligned): set what "re-entangled" means here. */
  beginReentangle(): void {
    this.wake();
    this.s.statusDirty = true;
    this.machine.beginReentangle();
  }

  /** Whether this register has reached the re-entanglement target. */
  aligned(): boolean {
    return this.machine.aligned();
  }

  /** Pieces of a fragmented message keep arriving (§3.4): a reconciliation request under way was heard. */
  peerDelivering(now: number): void {
    this.follower?.requester?.deferRetransmit(now, now + this.s.pair.rto());
  }

  /** Whether collapses or own candidates are in flight (COLLAPSING) or all is settled (ENTANGLED). */
  settled(): boolean {
    return this.s.own.length === 0 && this.machine.settled();
  }

  /**
   * Nothing to do until an input reaches it: no Status owed, no own candidate, its role idle
   * (nothing to send or collapse, no timer armed) and settled. The pair's steps skip a quiet
   * register (active.ts); its fill, handleTimeout and collapse would do nothing.
   */
  get quiet(): boolean {
    const s = this.s;
    return !s.statusDirty && !s.statusLazy && s.own.length === 0 && this.machine.idle();
  }

  /**
   * An input may give this register work: the pair's steps visit it again. Every entry point
   * that can change what `quiet` reads calls it (fill, handleTimeout and collapse cannot: they
   * only do work the register already had, so they need not).
   */
  wake(): void {
    this.s.pair.wake(this);
  }

  /** The pair re-entangled: report how this register got there (log unless reconciliation or a full transfer ran). */
  finishReentangle(now: number): void {
    const s = this.s;
    s.pair.emit({ type: 'reentangled', at: now, register: s.name, method: s.reentangleMethod, version: s.version });
    s.reentangleTarget = undefined;
    s.reentangleMethod = 'log';
  }

  // ---------------------------------------------------------------- outputs and timers

  status(): StatusMsg {
    return this.machine.status();
  }

  markStatusDirty(): void {
    this.wake();
    this.s.statusDirty = true;
  }

  /** The role's armed timers and their deadlines (ms). */
  deadlines(): Partial<Record<RegisterTimer, number>> {
    return this.machine.deadlines();
  }

  /** Fire the due timers (retransmission, sliced work, a held-back reconciliation); true if a retransmission timer fired. */
  handleTimeout(now: number): boolean {
    return this.machine.handleTimeout(now);
  }

  /**
   * Add this register's messages to the datagram being built: its Status if due (`ackDue`: the
   * pair's Ack deadline has come, so a Status owed lazily goes too), then its role's messages.
   */
  fill(now: number, b: PayloadBuilder, ackDue = false): void {
    const s = this.s;
    if (s.statusDirty || (s.statusLazy && ackDue) || (s.reachable && this.machine.startsSession(now))) {
      if (!b.addMessage(this.status())) return;
      s.statusSent();
    }
    if (s.reachable) this.machine.fill(now, b);
  }

  /** Whether a Status is owed lazily (it rides the next datagram, §9.1). */
  get statusOwed(): boolean {
    return this.s.statusLazy;
  }

  /** Add the Status owed lazily if it fits (the datagram goes anyway); false if it did not fit. */
  fillOwedStatus(b: PayloadBuilder): boolean {
    if (!this.s.statusLazy) return true;
    if (!b.addMessage(this.status())) return false;
    this.s.statusSent();
    return true;
  }
}
