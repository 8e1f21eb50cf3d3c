/**
 * One register at one endpoint of a pair: its committed StateBlock, bounded candidate
 * buffer, delta log, causal marks, and the sync logic for its role (docs/PROTOCOL.md §5-8).
 *
 * Collapse shape: a per-pair sequencer. The endpoint with the lower member id is the
 * pair's collapse authority; it orders every candidate (its own and the peer's, each
 * origin in sequence order), evaluates preconditions, commits, and ships each collapse
 * as a record carrying the resulting state hash. The follower applies records in version
 * order and checks the hash after each, so both ends reach the same (version, hash) and
 * reject the same candidates. Pure: no clock, no I/O; `now` comes from the caller.
 */
import { Writer, type Hash64Parts } from '../../wire/buffer.js';
import { DeltaOp, type RejectReason, REJECT_REASON_NAMES, validateDelta, encodedDeltaLen, type Delta } from '../../wire/delta.js';
import {
  MsgType,
  decodeMessages,
  encodeMessage,
  writeCollapseBody,
  type Candidate,
  type CollapseEntry,
  type CollapseMsg,
  type Message,
  type ProposeMsg,
  type StatusMsg,
  type VersionRange,
  MAX_HELD_RANGES,
} from '../../wire/messages.js';
import { varintLen } from '../../wire/buffer.js';
import { hashEquals, hashHex } from '../register/hash.js';
import { DeltaLog, type LogLimits, type LogRecord } from './log.js';
import { LifecycleEvent, PairState } from './lifecycle.js';
import type { SpookEvent } from './events.js';
import type { PayloadBuilder } from './payload.js';
import { MapState } from '../register/map.js';
import { StreamState } from '../register/stream.js';
import type { RegisterKind } from '../register/state.js';
import { PIN_BURST, PIN_INTERVAL_MS, ReconRequester, ReconResponder } from '../reconcile/reentangle.js';
import { Gcra } from '../util/rate.js';
import { Deque } from '../util/deque.js';
import { QUOTA_DEFAULTS, QuotaCheck, type Quota } from '../register/quota.js';

export type Role = 'sequencer' | 'follower';
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
}

export const REGISTER_DEFAULTS = {
  policy: 'buffer' as DecoherencePolicy,
  maxPending: 1024,
  log: { maxRecords: 65536, maxBytes: 64 * 1024 * 1024 },
  quota: QUOTA_DEFAULTS,
};

/** Collapse records in flight beyond the peer's acknowledged version. */
export const SEND_WINDOW = 256;
/** Out-of-order collapse records a follower holds while a gap fills. */
const REORDER_LIMIT = 256;
/** Room kept beside a collapse record in one payload: an Ack and a Status. */
const COLLAPSE_SLACK = 160;
const MAX_ENTRIES_PER_COLLAPSE = 255;
/** Gaps shorter than this are always replayed from the log (costing them is not worth it). */
const GAP_COSTING_MIN = 64;
/** Records decoded to cost a gap; a longer gap is extrapolated from its most recent ones. */
const GAP_COSTING_MAX = 4096;
/** Bytes of tree summaries a reconciliation spends per differing key (measured: ~650 at 10^6 keys, less below). */
const RECONCILE_OVERHEAD_PER_KEY = 400;
/** A ReconNode message: 16 children of (count varint, 8-byte hash) plus framing. */
const RECON_NODE_BYTES = 190;

/** What a replica needs from its pair. */
export interface PairContext {
  readonly role: Role;
  readonly localId: number;
  readonly peerId: number;
  readonly seed: number;
  readonly state: PairState;
  rto(): number;
  emit(ev: SpookEvent): void;
  /** Largest Data payload this pair sends. */
  readonly maxPayload: number;
  /** Queue a response message in the pair's bounded outbox. */
  respond(m: Message, now: number): void;
  /** A register saw a decoherence trigger while the peer is reachable. */
  trigger(event: LifecycleEvent, detail: string, now: number): void;
  countFullTransfer(): void;
  /** Drop and count something the peer sent (a closed set of reasons, PROTOCOL.md §11). */
  drop(now: number, reason: string, detail: string, n?: number): void;
  /** Durable storage, if any: called before anything that depends on it leaves the host. */
  readonly store?: PairStore;
}

/** Where a daemon makes a register's history durable (drivers/store/store.ts). */
export interface PairStore {
  /** A collapse was committed (sequencer) or applied (follower). */
  append(register: string, rec: LogRecord): void;
  /** Reconciliation or a full transfer replaced the register's state. */
  replaced(replica: Replica): void;
  /** Own candidate sequence numbers up to `upTo` may now be used; a restart continues above it. */
  lease(register: string, upTo: number): void;
  /**
   * An own candidate was accepted (before the proposer hears of it): it must survive a
   * restart and be proposed again until decided (§7.1). Decided ones are forgotten when
   * the store next rewrites its list from `ownCandidates()`.
   */
  proposed(register: string, seq: number, delta: Delta): void;
}

/** Own sequence numbers are leased in blocks so a restart never reuses one. */
const SEQ_LEASE = 1024;

/** A clear, typed refusal of a local write. */
export class ProposeError extends Error {
  constructor(
    readonly code: 'buffer-full' | 'frozen' | 'invalid' | 'closed',
    message: string,
  ) {
    super(message);
    this.name = 'ProposeError';
  }
}

interface OwnCandidate {
  seq: number;
  delta: Delta;
}

export class Replica {
  state: MapState | StreamState;
  version = 0;
  readonly log: DeltaLog;
  /** Causal marks: per origin, the highest candidate sequence already decided. Identical at both ends after each collapse. */
  readonly origins = new Map<number, number>();

  // Own candidates awaiting their outcome, in sequence order.
  private readonly own = new Deque<OwnCandidate>();
  private nextSeq = 1;
  private leasedSeq = 0;
  private resolvedSeq = 0;

  // Sequencer: candidates waiting for the next collapse, in arrival order (each origin in sequence order).
  private readonly pending = new Deque<Candidate>();
  private peerPendingHigh = 0;
  /** Rejections of peer candidates the peer has not yet acknowledged (bounded by its maxPending). */
  readonly peerRejections = new Map<number, number>();

  // What the peer told us.
  peerVersion = -1;
  private peerLatestVersion = -1;
  peerHash: Hash64Parts | undefined;
  private peerResolvedSeq = 0;
  /** Highest version the sequencer has announced (status or collapse); older statuses are stale. */
  private seqVersionSeen = 0;
  private seqLogBase = 0;

  // Sending state.
  private sentUpTo = 0;
  /** The peer was out of contact: the next status resets what we consider sent. */
  private goBack = false;
  /** Versions the follower reported holding out of order (its latest status). */
  private peerHeld: VersionRange[] = [];
  /** The acknowledged version at the last fast retransmit (one per gap). */
  private fastRetransmitAt = -1;
  /** Sequencer: versions at or below this are not served from the log (reconciliation is cheaper). */
  private servedBase = 0;
  private gapCosted = true;
  private sentSeqUpTo = 0;
  /** Highest own sequence number ever sent in a Propose (monotonic, unlike sentSeqUpTo). */
  private everSent = 0;
  private retransmitAt: number | undefined;
  private statusDirty = true;
  private readonly reconcileRate = new Gcra(PIN_BURST, PIN_INTERVAL_MS);
  /** When the responder's sliced work (chunking a pin) should continue. */
  private workDueAt: number | undefined;
  private readonly reorder = new Map<number, { msg: CollapseMsg; raw: Uint8Array }>();

  // Re-entanglement.
  /** Version both ends must reach before this register counts as re-entangled. */
  private reentangleTarget: number | undefined;
  requester: ReconRequester | undefined;
  private reentangleMethod: 'log' | 'reconcile' | 'full' = 'log';
  readonly responder: ReconResponder;
  reentanglements = 0;

  constructor(
    readonly cfg: RegisterConfig,
    private readonly pair: PairContext,
  ) {
    this.state = cfg.kind === 'map' ? new MapState(pair.seed) : new StreamState(pair.seed);
    this.log = new DeltaLog(cfg.log);
    this.log.reset(0, this.state.hash);
    this.responder = new ReconResponder(this);
    this.nameBytes = new TextEncoder().encode(cfg.name).length;
  }

  get name(): string {
    return this.cfg.name;
  }

  /** UTF-8 length of the name, for packing estimates. */
  private readonly nameBytes: number;

  get role(): Role {
    return this.pair.role;
  }

  get pendingCount(): number {
    return this.own.length;
  }

  get hash(): Hash64Parts {
    return this.state.hash;
  }

  /** Stream registers: the offset the next append must name. Counts own pending appends. */
  get nextAppendOffset(): number {
    let off = this.state.size();
    for (const c of this.own) if (c.delta.op === DeltaOp.Append) off += c.delta.data.length;
    return off;
  }

  /**
   * Load committed state before the pair starts (a snapshot from disk, or a benchmark's
   * preloaded map). The log restarts at `version`, so the peer is served from here on.
   */
  restore(version: number, load: (state: MapState | StreamState) => void, origins: Map<number, number> = new Map(), leasedSeq = 0): void {
    if (this.version !== 0 || this.own.length > 0) throw new Error(`register ${this.name}: restore() only before any collapse`);
    load(this.state);
    this.version = version;
    for (const [o, s] of origins) this.origins.set(o, s);
    this.log.reset(version, this.state.hash);
    this.continueSeqAfter(leasedSeq);
  }

  /** After a restart: own sequence numbers continue above everything leased or decided before. */
  continueSeqAfter(leasedSeq: number): void {
    this.nextSeq = Math.max(this.nextSeq, leasedSeq + 1, (this.origins.get(this.pair.localId) ?? 0) + 1);
    this.leasedSeq = Math.max(this.leasedSeq, leasedSeq);
    this.resolvedSeq = this.nextSeq - 1;
  }

  /** Own candidates without an outcome, lowest first (what a store keeps across a restart). */
  ownCandidates(): { seq: number; delta: Delta }[] {
    return [...this.own].map((c) => ({ seq: c.seq, delta: c.delta }));
  }

  /**
   * After a restart (the history already loaded): take back the own candidates that were
   * pending when the daemon stopped. Those the loaded history decided are dropped (their
   * outcome was reported before); the rest are proposed again under their own sequence
   * numbers, which the sequencer deduplicates (§7.6), and are decided like any other.
   * They count as sent: the sequencer may have them.
   */
  restorePending(cands: { seq: number; delta: Delta }[]): number {
    const mark = this.origins.get(this.pair.localId) ?? 0;
    const keep = cands.filter((c) => c.seq > mark).sort((a, b) => a.seq - b.seq);
    for (const c of keep) {
      if (this.own.length > 0 && this.own.last()!.seq >= c.seq) continue; // duplicates in the list
      this.own.push({ seq: c.seq, delta: c.delta });
      if (this.role === 'sequencer') this.pending.push({ origin: this.pair.localId, seq: c.seq, delta: c.delta });
    }
    if (this.own.length > 0) {
      // Not resolved: these are still to be decided (and proposed again by the follower).
      this.resolvedSeq = Math.min(this.resolvedSeq, this.own.peek()!.seq - 1);
      this.sentSeqUpTo = this.resolvedSeq;
      this.everSent = Math.max(this.everSent, this.own.last()!.seq);
      this.nextSeq = Math.max(this.nextSeq, this.own.last()!.seq + 1);
    }
    return this.own.length;
  }

  /**
   * Re-apply one persisted Collapse record (the encoded message) on restart, checking its
   * hash. Throws if the record does not follow the current version or does not verify.
   */
  replayRecord(raw: Uint8Array): void {
    const { messages } = decodeMessages(raw);
    const m = messages[0];
    if (messages.length !== 1 || m.type !== MsgType.Collapse)
      throw new Error(`register ${this.name}: log record is not one Collapse message`);
    if (m.version !== this.version + 1) throw new Error(`register ${this.name}: log record v${m.version} does not follow v${this.version}`);
    for (const e of m.entries) {
      if (e.verdict === 0 && e.delta) this.state.apply(e.delta, m.version);
      this.origins.set(e.origin, e.seq);
    }
    this.version = m.version;
    if (!hashEquals(this.state.hash, m.hash))
      throw new Error(
        `register ${this.name}: replaying v${m.version} gives h=${hashHex(this.state.hash)}, the record says ${hashHex(m.hash)}`,
      );
    this.log.append({ version: m.version, hash: m.hash, encoded: raw.slice() }, m.version);
  }

  // ---------------------------------------------------------------- local writes

  propose(now: number, delta: Delta): { origin: number; seq: number } {
    const st = this.pair.state;
    if (st === PairState.CLOSED) throw new ProposeError('closed', `register ${this.name}: pair is closed`);
    try {
      validateDelta(delta);
    } catch (e) {
      throw new ProposeError('invalid', `register ${this.name}: ${(e as Error).message}`);
    }
    if ((delta.op === DeltaOp.Append) !== (this.cfg.kind === 'stream')) {
      throw new ProposeError('invalid', `register ${this.name}: ${this.cfg.kind} register cannot take delta op ${DeltaOp[delta.op]}`);
    }
    const coherent = st === PairState.ENTANGLED || st === PairState.COLLAPSING;
    if (!coherent && this.role === 'follower' && this.cfg.policy === 'freeze') {
      throw new ProposeError('frozen', `register ${this.name}: frozen while the pair is ${st} (policy freeze)`);
    }
    if (this.own.length >= this.cfg.maxPending) {
      throw new ProposeError(
        'buffer-full',
        `register ${this.name}: candidate buffer full (${this.cfg.maxPending} pending, pair ${st}); retry after collapses`,
      );
    }
    if (this.nextSeq > Number.MAX_SAFE_INTEGER) {
      // Only a sequencer that reported an impossible mark for us gets here (§8.5): refuse, never encode it.
      throw new ProposeError(
        'closed',
        `register ${this.name}: own sequence numbers exhausted (mark ${this.origins.get(this.pair.localId)})`,
      );
    }
    const seq = this.nextSeq++;
    if (seq > this.leasedSeq) {
      this.leasedSeq = Math.min(seq + SEQ_LEASE - 1, Number.MAX_SAFE_INTEGER);
      this.pair.store?.lease(this.name, this.leasedSeq);
    }
    // Own the bytes: callers may reuse their buffers.
    const d = copyDelta(delta);
    // The sequencer decides its own candidates at its next collapse, before anyone is told
    // "pending"; the follower's can wait for the peer, so they are made durable first.
    if (this.role === 'follower') this.pair.store?.proposed(this.name, seq, d);
    this.own.push({ seq, delta: d });
    if (this.role === 'sequencer') this.pending.push({ origin: this.pair.localId, seq, delta: d });
    return { origin: this.pair.localId, seq };
  }

  // ---------------------------------------------------------------- collapse (sequencer)

  /** Turn pending candidates into committed versions. Sequencer only; returns versions made. */
  collapse(now: number): number {
    let made = 0;
    while (this.pending.length > 0) {
      const v = this.version + 1;
      const entries: CollapseEntry[] = [];
      let size = 0;
      let taken = 0;
      const quota = new QuotaCheck(this.state, this.cfg.quota);
      for (let i = 0; i < this.pending.length; i++) {
        const c = this.pending.at(i);
        const sz = varintLen(c.origin) + varintLen(c.seq) + 1 + encodedDeltaLen(c.delta);
        if (entries.length >= MAX_ENTRIES_PER_COLLAPSE || (entries.length > 0 && size + sz > this.pair.maxPayload - COLLAPSE_SLACK)) break;
        let verdict: number = this.state.check(c.delta);
        if (verdict === 0) verdict = quota.admit(c.delta, v);
        if (verdict === 0) this.state.apply(c.delta, v);
        entries.push(verdict === 0 ? { origin: c.origin, seq: c.seq, verdict, delta: c.delta } : { origin: c.origin, seq: c.seq, verdict });
        this.origins.set(c.origin, c.seq);
        // Kept for §8.5 until the follower acknowledges it (never for one it already has).
        if (verdict !== 0 && c.origin === this.pair.peerId && c.seq > this.peerResolvedSeq) this.peerRejections.set(c.seq, verdict);
        size += sz;
        taken++;
      }
      for (let i = 0; i < taken; i++) this.pending.shift();
      this.version = v;
      const hash = { hi: this.state.hash.hi, lo: this.state.hash.lo };
      const w = new Writer(size + 96);
      const body = new Writer(size + 96);
      writeCollapseBody(body, { register: this.name, version: v, hash, entries });
      w.u8(MsgType.Collapse).varint(body.pos).bytes(body.buf.subarray(0, body.pos));
      const rec = { version: v, hash, encoded: w.finish() };
      this.log.append(rec, this.peerVersion);
      this.pair.store?.append(this.name, rec);
      this.afterCollapse(now, v, entries);
      made++;
    }
    return made;
  }

  private afterCollapse(now: number, v: number, entries: CollapseEntry[]): void {
    this.pair.emit({ type: 'collapse', at: now, register: this.name, version: v, hash: hashHex(this.state.hash), entries });
    for (const e of entries) {
      if (e.origin === this.pair.localId) this.resolveOwn(now, e.seq, e.verdict, v);
    }
    this.statusDirty = this.statusDirty || this.role === 'follower';
  }

  /** Tell the proposer how one of its candidates ended (verdict 0: committed). */
  private emitOutcome(now: number, seq: number, verdict: number, version: number): void {
    this.pair.emit({
      type: 'outcome',
      at: now,
      register: this.name,
      origin: this.pair.localId,
      seq,
      verdict: verdict === 0 ? 'committed' : 'rejected',
      reason: verdict === 0 ? undefined : REJECT_REASON_NAMES[verdict as RejectReason],
      version,
    });
  }

  private resolveOwn(now: number, seq: number, verdict: number, version: number): void {
    // Own candidates resolve in sequence order; anything at or below `seq` still listed was decided earlier.
    while (this.own.length > 0 && this.own.peek()!.seq <= seq) {
      const c = this.own.shift()!;
      this.emitOutcome(now, c.seq, c.seq === seq ? verdict : 0, version);
    }
    this.resolvedSeq = Math.max(this.resolvedSeq, seq);
  }

  // ---------------------------------------------------------------- inbound messages

  onStatus(now: number, m: StatusMsg): void {
    if (this.role === 'sequencer') this.onFollowerStatus(now, m);
    else this.onSequencerStatus(now, m);
  }

  private onFollowerStatus(now: number, m: StatusMsg): void {
    const first = this.peerVersion < 0;
    this.peerLatestVersion = m.version;
    // A reordered older status says nothing new. (A regression beyond the send window is a follower that lost state.)
    // (A recorded version above our own was never a real one: it is no reference for staleness.)
    if (!first && m.version < this.peerVersion && m.version >= this.peerVersion - SEND_WINDOW && this.peerVersion <= this.version) return;
    const progressed = first || m.version > this.peerVersion;
    this.acceptPeerVersion(m);
    // After a gap in contact, resend from what the peer holds now rather than wait for the (backed-off) timer.
    if (first || this.goBack || this.sentUpTo < m.version) this.sentUpTo = m.version;
    this.goBack = false;
    // Selective acknowledgement: versions above a gap arrived, so the gap was lost. Resend it
    // once now (fast retransmit), skipping what the peer holds; a gap that stays waits for the timer.
    this.peerHeld = m.held;
    if (m.held.length > 0 && m.version > this.fastRetransmitAt && this.sentUpTo > m.version) {
      this.fastRetransmitAt = m.version;
      this.sentUpTo = m.version;
    }
    this.peerResolvedSeq = Math.max(this.peerResolvedSeq, m.resolvedSeq);
    for (const s of this.peerRejections.keys()) if (s <= this.peerResolvedSeq) this.peerRejections.delete(s);
    const mine = this.log.hashAt(m.version);
    const coherent = this.pair.state === PairState.ENTANGLED || this.pair.state === PairState.COLLAPSING;
    if (m.version > this.version || (mine !== undefined && !hashEquals(mine, m.hash))) {
      if (coherent)
        this.pair.trigger(LifecycleEvent.HashMismatch, `register ${this.name}: peer at v${m.version} h=${hashHex(m.hash)}`, now);
      return;
    }
    if (mine !== undefined) {
      // The peer holds everything up to m.version: history before it is no longer needed (compaction at acknowledgement).
      this.log.compactThrough(m.version);
      this.responder.release(m.version);
    } else if (coherent) {
      this.pair.trigger(
        LifecycleEvent.UnfillableGap,
        `register ${this.name}: peer at v${m.version}, log starts after v${this.log.base}`,
        now,
      );
    }
    if (m.version >= this.version) this.retransmitAt = undefined;
    else if (progressed) this.retransmitAt = now + this.pair.rto();
    // While re-entangling the follower waits on our status to finish; keep it current.
    if (progressed && !coherent) this.statusDirty = true;
    if (!coherent && !this.gapCosted) this.costGap(m.version);
    if (this.servedBase > 0 && m.version >= this.servedBase) this.servedBase = 0;
  }

  private acceptPeerVersion(m: StatusMsg): void {
    this.peerVersion = m.version;
    this.peerHash = m.hash;
  }

  private onSequencerStatus(now: number, m: StatusMsg): void {
    // Stale (reordered) if a little below what the sequencer announced; far below, the
    // earlier announcement was wrong (a sequencer that lost state, or a lie): start from this one.
    if (m.version < this.seqVersionSeen && m.version >= this.seqVersionSeen - SEND_WINDOW) return;
    // A re-entanglement target taken from the wrong announcement goes with it.
    if (this.reentangleTarget !== undefined && this.reentangleTarget > m.version) this.reentangleTarget = m.version;
    this.seqVersionSeen = m.version;
    this.seqLogBase = m.logBase;
    this.peerVersion = m.version;
    this.peerHash = m.hash;
    this.peerResolvedSeq = m.resolvedSeq;
    this.checkAlignment(now);
  }

  /** Follower: decide whether the log can bring us to the sequencer, or reconciliation must. */
  private checkAlignment(now: number): void {
    if (this.requester !== undefined || this.peerHash === undefined) return;
    const st = this.pair.state;
    if (st === PairState.DECOHERENT || st === PairState.CLOSED) return;
    let trigger: LifecycleEvent | undefined;
    let detail = '';
    if (this.peerVersion < this.version || (this.peerVersion === this.version && !hashEquals(this.peerHash, this.state.hash))) {
      trigger = LifecycleEvent.HashMismatch;
      detail = `register ${this.name}: local v${this.version} h=${hashHex(this.state.hash)}, sequencer v${this.peerVersion} h=${hashHex(this.peerHash)}`;
    } else if (this.peerVersion > this.version && this.seqLogBase > this.version) {
      trigger = LifecycleEvent.UnfillableGap;
      detail = `register ${this.name}: at v${this.version}, sequencer log starts after v${this.seqLogBase}`;
    }
    if (trigger === undefined) return;
    if (st !== PairState.FORMING) this.pair.trigger(trigger, detail, now);
    this.startReconcile(now);
  }

  private startReconcile(now: number): void {
    // A sequencer can make us reconcile again and again (each ends in a snapshot, O(state)):
    // sessions start at the pins' rate, 2 at once then one per second (§8.2).
    const at = this.reconcileRate.next(now);
    this.reconcileRate.take(at);
    this.requester = new ReconRequester(this, at > now ? at : undefined);
    this.reorder.clear();
  }

  /** Sequencer only (the pair routes Propose nowhere else). Returns candidates refused for a wrong origin. */
  onPropose(now: number, m: ProposeMsg): number {
    let refused = 0;
    // `base` may skip the numbers a follower lost in a restart (at most a lease and its
    // pending candidates); a larger jump would make every later honest candidate a "duplicate".
    const mark = this.origins.get(this.pair.peerId) ?? 0;
    if (m.base - 1 > Math.max(mark, this.peerPendingHigh) + this.cfg.maxPending + 4 * SEQ_LEASE) {
      this.pair.drop(
        now,
        'beyond-window',
        `register ${this.name}: Propose base ${m.base} far above the peer's mark ${mark}`,
        m.candidates.length,
      );
      return 0;
    }
    for (let i = 0; i < m.candidates.length; i++) {
      const c = m.candidates[i];
      if (c.origin !== this.pair.peerId) {
        refused++;
        continue;
      }
      // Each origin's candidates are taken in sequence order; below the proposer's base nothing more will come.
      const expected = Math.max(this.origins.get(c.origin) ?? 0, this.peerPendingHigh, m.base - 1) + 1;
      if (c.seq !== expected) continue; // duplicate, or a gap the peer will retransmit into
      // The receive window (§7.2): an honest follower holds at most maxPending candidates, so
      // it never fills the queue nor leaves 2·maxPending rejections unacknowledged. Past
      // that nothing is kept: counted, and the peer retransmits once there is room.
      const left = m.candidates.length - i;
      if (this.pending.length >= 2 * this.cfg.maxPending || this.peerRejections.size >= 2 * this.cfg.maxPending) {
        this.pair.drop(now, 'beyond-window', `register ${this.name}: ${left} candidate(s) past the receive window`, left);
        break;
      }
      this.pending.push({ origin: c.origin, seq: c.seq, delta: copyDelta(c.delta) });
      this.peerPendingHigh = c.seq;
    }
    return refused;
  }

  onCollapse(now: number, m: CollapseMsg, raw: Uint8Array): void {
    if (this.role !== 'follower') return;
    if (m.version > this.version + SEND_WINDOW && this.requester === undefined) {
      // Past the send window (§8.1): the sequencer may not send it yet; nothing is kept.
      this.pair.drop(now, 'beyond-window', `register ${this.name}: v${m.version} with the local version at v${this.version}`);
      return;
    }
    if (m.version > this.seqVersionSeen) this.seqVersionSeen = m.version;
    if (this.requester !== undefined) return; // the state is being replaced; the log catch-up follows
    if (m.version <= this.version) {
      this.statusDirty = true; // a duplicate: re-acknowledge
      return;
    }
    if (m.version > this.version + 1) {
      if (this.reorder.size < REORDER_LIMIT && !this.reorder.has(m.version)) {
        this.reorder.set(m.version, { msg: m, raw: raw.slice() });
        this.statusDirty = true; // tell the sequencer what arrived past the gap
      }
      return;
    }
    if (!this.applyCollapse(now, m, raw)) return;
    for (let next = this.reorder.get(this.version + 1); next; next = this.reorder.get(this.version + 1)) {
      this.reorder.delete(next.msg.version);
      if (!this.applyCollapse(now, next.msg, next.raw) || this.requester !== undefined) break;
    }
    for (const v of this.reorder.keys()) if (v <= this.version) this.reorder.delete(v);
  }

  /** Apply one record in order; false if it was refused (over this host's quota) and nothing changed. */
  private applyCollapse(now: number, m: CollapseMsg, raw: Uint8Array): boolean {
    const v = m.version;
    // The sequencer's verdicts bind, but not past this host's own quota: check the whole record first.
    const quota = new QuotaCheck(this.state, this.cfg.quota);
    for (const e of m.entries) {
      if (e.verdict === 0 && e.delta && quota.admit(e.delta, v) !== 0) {
        this.pair.drop(
          now,
          'quota-violation',
          `register ${this.name}: v${v} would exceed the quota (${this.cfg.quota.maxKeys} keys, ${this.cfg.quota.maxBytes} octets)`,
        );
        return false;
      }
    }
    for (const e of m.entries) {
      // Follow the sequencer's verdicts; a local precondition that disagrees means divergence, caught by the hash.
      if (e.verdict === 0 && e.delta) {
        const st = this.state;
        if (st.check(e.delta) === 0) st.apply(e.delta, v);
        else if (e.delta.op === DeltaOp.Append && st instanceof StreamState) st.appendBytes(e.delta.data.slice());
        else if (e.delta.op !== DeltaOp.Append && st instanceof MapState) st.apply(e.delta, v);
      }
      this.origins.set(e.origin, e.seq);
    }
    this.version = v;
    if (!hashEquals(this.state.hash, m.hash)) {
      // Diverged: nothing of this version is logged or persisted; reconciliation replaces the state.
      this.pair.trigger(
        LifecycleEvent.HashMismatch,
        `register ${this.name}: after v${v} local h=${hashHex(this.state.hash)}, sequencer h=${hashHex(m.hash)}`,
        now,
      );
      this.startReconcile(now);
      return true;
    }
    const rec = { version: v, hash: m.hash, encoded: raw.slice() };
    this.log.append(rec, v);
    this.pair.store?.append(this.name, rec);
    this.afterCollapse(now, v, m.entries);
    return true;
  }

  // ---------------------------------------------------------------- re-entanglement bookkeeping

  /** The pair heard its peer after decoherence (or formed misaligned): set what "re-entangled" means here. */
  beginReentangle(): void {
    this.reentangleTarget = this.role === 'sequencer' ? this.version : undefined;
    this.goBack = true;
    this.gapCosted = false;
    // The follower takes its target from the sequencer's next status, not one from before the cut.
    if (this.role === 'follower') this.peerHash = undefined;
    this.statusDirty = true;
  }

  /**
   * Re-entanglement by log replays every missed collapse; reconciliation sends each
   * differing key once. When the missed collapses rewrote the same keys over and over, the
   * replay costs more: then advertise the gap as unservable (Status.logBase) so the follower
   * reconciles. Costed once per re-entanglement, O(gap); streams always replay (a stream's
   * gap is its tail either way).
   */
  private costGap(peerVersion: number): void {
    this.gapCosted = true;
    const gap = this.version - peerVersion;
    if (!(this.state instanceof MapState) || gap < GAP_COSTING_MIN || !this.log.covers(peerVersion)) return;
    let logBytes = 0;
    const keys = new Set<string>();
    // A follower can force a re-entanglement with one Status: decode at most GAP_COSTING_MAX
    // records (the most recent) and extrapolate the distinct keys from them (an upper bound).
    const scanFrom = Math.max(peerVersion + 1, this.version - GAP_COSTING_MAX + 1);
    for (let v = peerVersion + 1; v <= this.version; v++) {
      const rec = this.log.get(v)!;
      logBytes += rec.encoded.length;
      if (v < scanFrom) continue;
      const m = decodeMessages(rec.encoded).messages[0] as CollapseMsg;
      for (const e of m.entries) if (e.delta && 'key' in e.delta) keys.add(Buffer.from(e.delta.key).toString('latin1'));
    }
    const n = this.state.size();
    const distinct = Math.min(n + gap * MAX_ENTRIES_PER_COLLAPSE, Math.ceil((keys.size * gap) / (this.version - scanFrom + 1)));
    const avgEntry = n > 0 ? this.state.fullTransferBytes() / n : 64;
    // Reconciliation: the differing keys' entries, plus tree summaries: about a path per key
    // when differences are sparse, at most the whole tree (one 16-child node per ~8 entries).
    const treeBytes = Math.min(distinct * RECONCILE_OVERHEAD_PER_KEY, (n / 8 + 1) * RECON_NODE_BYTES);
    const reconcileBytes = distinct * avgEntry + treeBytes;
    if (reconcileBytes * 2 < logBytes) {
      this.servedBase = this.version;
      this.statusDirty = true;
    }
  }

  /** Whether this register has reached the re-entanglement target. */
  aligned(): boolean {
    if (this.requester !== undefined) return false;
    if (this.role === 'sequencer') {
      if (this.peerHash === undefined || this.peerVersion < (this.reentangleTarget ?? this.version)) return false;
      const mine = this.log.hashAt(this.peerVersion);
      return mine !== undefined && hashEquals(mine, this.peerHash);
    }
    if (this.peerHash === undefined) return false;
    // The sequencer's status when we heard it again sets the target: everything committed during the cut.
    if (this.reentangleTarget === undefined) this.reentangleTarget = this.peerVersion;
    if (this.version < this.reentangleTarget) return false;
    return this.version !== this.peerVersion || hashEquals(this.state.hash, this.peerHash);
  }

  /** Whether collapses or own candidates are in flight (COLLAPSING) or all is settled (ENTANGLED). */
  settled(): boolean {
    if (this.own.length > 0 || this.pending.length > 0) return false;
    if (this.role === 'sequencer') return this.peerVersion === this.version;
    return this.peerVersion <= this.version;
  }

  /** Reconciliation or a full transfer replaced the state: adopt the sequencer's version and marks. */
  adopt(now: number, version: number, origins: Map<number, number>, rejections: Map<number, number>, method: 'reconcile' | 'full'): void {
    this.version = version;
    this.seqVersionSeen = Math.max(this.seqVersionSeen, version);
    this.origins.clear();
    for (const [o, s] of origins) this.origins.set(o, s);
    this.log.reset(version, this.state.hash);
    this.requester = undefined;
    this.reorder.clear();
    // Own candidates decided while we could not see the collapses: outcome from the marks and the rejection list.
    const mark = origins.get(this.pair.localId) ?? 0;
    while (this.own.length > 0 && this.own.peek()!.seq <= mark) {
      const c = this.own.shift()!;
      if (this.role === 'follower' && c.seq > this.everSent) {
        // Never sent, yet at or below the sequencer's mark: this endpoint lost its data and
        // reused a sequence number the sequencer had already decided. It was not committed.
        this.pair.emit({
          type: 'outcome',
          at: now,
          register: this.name,
          origin: this.pair.localId,
          seq: c.seq,
          verdict: 'rejected',
          reason: 'sequence-reused',
          version,
        });
        continue;
      }
      this.emitOutcome(now, c.seq, rejections.get(c.seq) ?? 0, version);
    }
    this.resolvedSeq = Math.max(this.resolvedSeq, mark);
    this.sentSeqUpTo = this.resolvedSeq;
    // Never reuse a sequence number the sequencer has decided (a follower that lost its data).
    if (this.nextSeq <= mark) this.continueSeqAfter(mark);
    this.statusDirty = true;
    this.reentangleMethod = method;
    this.pair.store?.replaced(this);
  }

  countFullTransfer(): void {
    this.pair.countFullTransfer();
  }

  respond(m: Message, now: number): void {
    this.pair.respond(m, now);
  }

  /** A request refused (not answered) and counted. */
  refuse(now: number, reason: string, detail: string): void {
    this.pair.drop(now, reason, `register ${this.name}: ${detail}`);
  }

  /** Sequencer: whether the log (and the served base) can bring the follower from `v` to the present (§8.2 pin reuse). */
  canServeFrom(v: number): boolean {
    return this.log.covers(v) && v >= this.servedBase && v >= this.peerVersion;
  }

  /** The responder has sliced work left: run handleTimeout at once (bounded per call). */
  wantWork(now: number): void {
    this.workDueAt = now;
  }

  get localId(): number {
    return this.pair.localId;
  }

  get peerId(): number {
    return this.pair.peerId;
  }

  rto(): number {
    return this.pair.rto();
  }

  // ---------------------------------------------------------------- outbound

  status(): StatusMsg {
    return {
      type: MsgType.Status,
      register: this.name,
      version: this.version,
      hash: { hi: this.state.hash.hi, lo: this.state.hash.lo },
      logBase: Math.max(this.log.base, this.servedBase),
      resolvedSeq: this.resolvedSeq,
      held: this.heldRanges(),
    };
  }

  /** The follower's out-of-order versions as ranges (at most MAX_HELD_RANGES, lowest first). */
  private heldRanges(): VersionRange[] {
    if (this.reorder.size === 0) return [];
    const vs = [...this.reorder.keys()].filter((v) => v > this.version + 1).sort((a, b) => a - b);
    const out: VersionRange[] = [];
    for (const v of vs) {
      const last = out[out.length - 1];
      if (last && v === last.to + 1) last.to = v;
      else if (out.length < MAX_HELD_RANGES) out.push({ from: v, to: v });
      else break;
    }
    return out;
  }

  private peerHolds(v: number): boolean {
    for (const r of this.peerHeld) if (v >= r.from && v <= r.to) return true;
    return false;
  }

  markStatusDirty(): void {
    this.statusDirty = true;
  }

  nextTimeout(): number | undefined {
    const t = this.requester ? (this.requester.retransmitAt ?? this.requester.notBefore) : this.retransmitAt;
    if (this.workDueAt === undefined) return t;
    return t === undefined ? this.workDueAt : Math.min(t, this.workDueAt);
  }

  /** Retransmission timer: go back to what the peer has acknowledged and resend. */
  onTimeout(now: number): boolean {
    if (this.workDueAt !== undefined && now >= this.workDueAt) {
      this.workDueAt = undefined;
      this.responder.work(now);
    }
    let fired = false;
    if (this.retransmitAt !== undefined && now >= this.retransmitAt) {
      fired = true;
      this.retransmitAt = undefined;
      // Go back to what the peer last said it holds (even if that status looked stale) and resend from there.
      if (this.role === 'sequencer') this.sentUpTo = Math.max(Math.min(this.peerVersion, this.peerLatestVersion), 0);
      else this.sentSeqUpTo = this.resolvedSeq;
      this.statusDirty = true;
    }
    // A held-back start that is due: fill() sends it now (or when the peer is reachable).
    if (this.requester?.notBefore !== undefined && now >= this.requester.notBefore) this.requester.notBefore = undefined;
    if (this.requester?.onTimeout(now)) fired = true;
    return fired;
  }

  /** Add this register's messages to the datagram being built. */
  fill(now: number, b: PayloadBuilder): void {
    const st = this.pair.state;
    if (this.statusDirty) {
      if (!b.add(encodeMessage(this.status()))) return;
      this.statusDirty = false;
    }
    const reachable = st !== PairState.DECOHERENT && st !== PairState.CLOSED && st !== PairState.FORMING;
    if (!reachable) return;
    if (this.role === 'sequencer') this.fillCollapses(now, b);
    else if (this.requester !== undefined) this.requester.fill(now, b);
    else this.fillProposals(now, b);
  }

  private fillCollapses(now: number, b: PayloadBuilder): void {
    if (this.peerVersion < 0) return;
    if (this.peerVersion < this.servedBase) return; // the follower reconciles past this gap instead
    const limit = Math.min(this.version, this.peerVersion + SEND_WINDOW);
    while (this.sentUpTo < limit) {
      if (this.peerHolds(this.sentUpTo + 1)) {
        this.sentUpTo++;
        continue;
      }
      const rec = this.log.get(this.sentUpTo + 1);
      if (!rec) return; // compacted: the follower sees the gap in our status and reconciles
      if (!b.add(rec.encoded)) return;
      this.sentUpTo++;
      if (this.retransmitAt === undefined) this.retransmitAt = now + this.pair.rto();
    }
  }

  private fillProposals(now: number, b: PayloadBuilder): void {
    let i = 0;
    while (i < this.own.length && this.own.at(i).seq <= this.sentSeqUpTo) i++;
    if (i >= this.own.length) return;
    // Name + counts overhead, then candidates while they fit.
    let room = b.room - (8 + varintLen(this.nameBytes) + this.nameBytes + 3);
    const candidates: Candidate[] = [];
    for (; i < this.own.length; i++) {
      const c = this.own.at(i);
      const sz = varintLen(this.pair.localId) + varintLen(c.seq) + encodedDeltaLen(c.delta);
      if (sz > room) break;
      room -= sz;
      candidates.push({ origin: this.pair.localId, seq: c.seq, delta: c.delta });
    }
    if (candidates.length === 0) return;
    if (!b.add(encodeMessage({ type: MsgType.Propose, register: this.name, base: this.own.peek()!.seq, candidates }))) return;
    this.sentSeqUpTo = candidates[candidates.length - 1].seq;
    this.everSent = Math.max(this.everSent, this.sentSeqUpTo);
    if (this.retransmitAt === undefined) this.retransmitAt = now + this.pair.rto();
  }

  /** Whether a datagram would carry something for this register now. */
  wantsToSend(): boolean {
    if (this.statusDirty) return true;
    const st = this.pair.state;
    if (st === PairState.DECOHERENT || st === PairState.CLOSED || st === PairState.FORMING) return false;
    if (this.role === 'sequencer')
      return (
        this.peerVersion >= 0 && this.sentUpTo < Math.min(this.version, this.peerVersion + SEND_WINDOW) && this.log.covers(this.sentUpTo)
      );
    if (this.requester !== undefined) return this.requester.wantsToSend();
    return this.own.length > 0 && this.own.last()!.seq > this.sentSeqUpTo;
  }

  /** Sequencer: whether collapse has work. */
  get hasPending(): boolean {
    return this.pending.length > 0;
  }

  /** The pair re-entangled: report how this register got there (log unless reconciliation or a full transfer ran). */
  finishReentangle(now: number): void {
    this.reentanglements++;
    this.pair.emit({ type: 'reentangled', at: now, register: this.name, method: this.reentangleMethod, version: this.version });
    this.reentangleTarget = undefined;
    this.reentangleMethod = 'log';
  }
}

function copyDelta(d: Delta): Delta {
  switch (d.op) {
    case DeltaOp.Set:
      return { op: d.op, key: d.key.slice(), value: d.value.slice() };
    case DeltaOp.Del:
      return { op: d.op, key: d.key.slice() };
    case DeltaOp.Cas:
      return { op: d.op, key: d.key.slice(), expect: d.expect, value: d.value.slice() };
    case DeltaOp.Append:
      return { op: d.op, offset: d.offset, data: d.data.slice() };
  }
}
