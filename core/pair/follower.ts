/**
 * The follower's half of a register replica (docs/PROTOCOL.md §7-8): it proposes its own
 * candidates to the sequencer, applies collapse records in version order (holding a few
 * out of order) and checks the hash after each; when the log cannot bring it to the
 * sequencer's state, it reconciles (ReconRequester) and installs the verified result.
 */
import { varintLen } from '../../wire/buffer.js';
import { MAX_MESSAGE_LEN } from '../../wire/constants.js';
import { encodedEntryDeltaLen, ownPart, type EntryDelta } from '../../wire/cross.js';
import { DeltaOp, REJECT_REASON_NAMES, isStreamDelta, type RejectReason, type SimpleDelta } from '../../wire/delta.js';
import {
  MsgType,
  collapsePacked,
  encodeMessage,
  encodedCollapseLen,
  type CollapseEntry,
  type CollapseMsg,
  type PairCandidate,
  type ProposeMsg,
  type StatusMsg,
  type VersionRange,
  MAX_HELD_RANGES,
} from '../../wire/messages.js';
import { PackedCursor, type PackedEntries } from '../../wire/packed.js';
import type { ReconDrop, Reconciled, RequesterHost } from '../reconcile/host.js';
import { PIN_BURST, PIN_INTERVAL_MS, ReconRequester } from '../reconcile/reentangle.js';
import { hashEquals, hashHex } from '../register/hash.js';
import { MapState } from '../register/map.js';
import type { Quota } from '../register/quota.js';
import { MAP_MAX_BYTES, QuotaCheck, mapMaxBytes } from '../register/quota.js';
import { StreamState } from '../register/stream.js';
import { Deque } from '../util/deque.js';
import { unpinned } from '../util/pinned.js';
import { Gcra } from '../util/rate.js';
import { decideCross, type CrossTarget } from './cross.js';
import { LifecycleEvent, PairState } from './lifecycle.js';
import type { PayloadBuilder } from './payload.js';
import { COMMITTED, FOLLOWER_TIMERS, PROPOSE_WINDOW, SEND_WINDOW, type FollowerTimer, type RoleMachine, type Shared } from './shared.js';
import type { OwnCandidate, RegisterMessage } from './types.js';

/**
 * Apply a committed op whose precondition does not hold here (divergence the hash then reports).
 * An op of the other kind never gets here (onCollapse refuses its record, `invalid-record`); it
 * would be skipped, as it was before rev 1.32 (a replay of such a log skips it too, Replica.replayRecord).
 */
function forceApply(st: MapState | StreamState, d: SimpleDelta, v: number): void {
  if (d.op === DeltaOp.Append && st instanceof StreamState) st.appendBytes(d.data.slice());
  else if (d.op !== DeltaOp.Append && st instanceof MapState) st.apply(d, v);
}

/** A record held out of order: as it came (a record leaving out own deltas keeps its wire form until it is applied, §3.6.4). */
interface Held {
  msg: CollapseMsg;
  raw: Uint8Array;
}

/**
 * The last 'wait' crossGroup found for the record held at the next version, and what it read of
 * the register it waits on: while that register's version, held records (`heldEpoch`) and
 * reconciliation or replacement are as they were, the record still waits on it (the answer
 * depends on nothing else of that register), and is not looked at again (§4.6).
 */
interface WaitMemo {
  held: Held;
  on: Follower;
  version: number;
  epoch: number;
  busy: boolean;
}

/** A sibling register and the part records it applies with an anchor record (§4.6). */
interface CrossMember {
  follower: Follower;
  versions: number[];
}

const NONE_MOVED: readonly Follower[] = Object.freeze([]);
const NO_MEMBERS: { members: CrossMember[] } = Object.freeze({ members: [] as CrossMember[] });

/** Out-of-order collapse records a follower holds while a gap fills. */
const REORDER_LIMIT = 256;
/** And their bytes: a few largest values (§3.4), at least 1 MiB. */
const reorderByteLimit = (maxValueBytes: number): number => Math.max(1 << 20, 4 * maxValueBytes);

export class Follower implements RoleMachine, RequesterHost {
  readonly role = 'follower';
  readonly freezesWhenIncoherent: boolean;
  /** Reconciliation or a full transfer under way. */
  private session: ReconRequester | undefined;

  /** Highest version the sequencer has announced (status or collapse); older statuses are stale. */
  private seqVersionSeen = 0;
  /**
   * The last sequencer Status ignored as stale (below what it announced, within the send window)
   * and when it first came: the same version again two keepalives later, no Status taken between,
   * is no late copy but a sequencer that came back behind what it announced (open question 2,
   * rev 1.27): one that had not would have sent a Status at its version meanwhile.
   */
  private lowerStatus: { version: number; since: number } | undefined;
  private seqLogBase = 0;
  /** Own candidates up to this sequence number are sent (until a retransmission timeout). */
  private sentSeqUpTo = 0;
  /**
   * The last own seq of each Propose sent since the last go-back, oldest first: the datagrams
   * in flight until their last candidate has its outcome (at most PROPOSE_WINDOW, §7.5).
   */
  private readonly proposesInFlight = new Deque<number>();
  /** When each of those was sent (same order): a Propose is overdue one RTO after it was sent (§9.3, rev 1.19). */
  private readonly proposesSentAt = new Deque<number>();
  /** Highest own sequence number ever sent in a Propose (monotonic, unlike sentSeqUpTo). */
  private everSent = 0;
  private retransmitAt: number | undefined;
  private readonly reconcileRate = new Gcra(PIN_BURST, PIN_INTERVAL_MS);
  private readonly reorder = new Map<number, Held>();
  /** The register whose progress the held next record waits for (a cross-register txn, §4.6). */
  waitingOn: Follower | undefined;
  /** Why the held next record waits, as crossGroup last found it (undefined: not known). */
  private waitMemo: WaitMemo | undefined;
  /** Moves whenever the held records change: a record waiting on this register looks again then. */
  private heldEpoch = 0;
  private reorderBytes = 0;
  /** The batch holding this register's last replacement while it is not durable (0: none). */
  private replacedIn = 0;

  constructor(private readonly s: Shared) {
    this.freezesWhenIncoherent = s.cfg.policy === 'freeze';
  }

  /** The reconciliation session under way, if any. */
  get requester(): ReconRequester | undefined {
    return this.session;
  }

  get reconciling(): boolean {
    return this.session !== undefined;
  }

  /**
   * Its state was replaced (reconciliation, a full transfer) in a batch not durable yet: records
   * wait until it is (§10.1). That batch's snapshot holds the register as the batch leaves it; a
   * record applied after the replacement that then diverged (never logged) would leave the image
   * ahead of every record, which no snapshot may hold, and the store would refuse the batch.
   */
  get awaitingReplacement(): boolean {
    if (this.replacedIn !== 0 && this.s.pair.durable(this.replacedIn)) this.replacedIn = 0;
    return this.replacedIn !== 0;
  }

  // ---------------------------------------------------------------- RequesterHost

  get name(): string {
    return this.s.name;
  }

  get version(): number {
    return this.s.version;
  }

  get state(): MapState | StreamState {
    return this.s.state;
  }

  get quota(): Quota {
    const q = this.s.cfg.holdQuota ?? this.s.cfg.quota;
    // A map holds at most MAP_MAX_BYTES whatever its quota (quota.ts): reconciliation counts the same bound.
    return this.s.state instanceof MapState && q.maxBytes > MAP_MAX_BYTES ? { ...q, maxBytes: mapMaxBytes(q) } : q;
  }

  refuse(now: number, reason: ReconDrop, detail: string): void {
    this.s.pair.drop(now, reason, `register ${this.s.name}: ${detail}`);
  }

  rto(): number {
    return this.s.pair.rto();
  }

  countFullTransfer(): void {
    this.s.pair.countFullTransfer();
  }

  /** Reconciliation or a full transfer verified its result: install it and adopt the sequencer's version and marks. */
  install(now: number, r: Reconciled): void {
    const s = this.s;
    const ch = r.change;
    if (ch.kind === 'replace') s.state = ch.state;
    else if (ch.kind === 'append-stream' && s.state instanceof StreamState) for (const c of ch.chunks) s.state.appendBytes(c);
    else if (ch.kind === 'edit-map' && s.state instanceof MapState) {
      for (const e of ch.deletes) s.state.remove(e.key);
      // Sized first: reconciliation's puts come bucket by bucket, in key-hash order (KeyTable.reserveCount).
      s.state.reserveKeys(s.state.size() + ch.puts.length);
      for (const e of ch.puts) s.state.put(e.key, e.value, e.version);
    } else throw new Error(`register ${s.name}: a ${ch.kind} change for a ${s.cfg.kind} register`);
    s.version = r.version;
    this.seqVersionSeen = Math.max(this.seqVersionSeen, r.version);
    s.origins.clear();
    for (const [o, q] of r.origins) s.mark(o, q);
    s.log.reset(r.version, s.state.hash);
    this.session = undefined;
    this.clearReorder();
    // Own candidates decided while we could not see the collapses: outcome from the marks and the rejection list.
    const mark = r.origins.get(s.pair.localId) ?? 0;
    while (s.own.length > 0 && s.own.peek()!.seq <= mark) {
      const c = s.shiftOwn()!;
      if (c.seq > this.everSent) {
        // Never sent, yet at or below the sequencer's mark: this endpoint lost its data and
        // reused a sequence number the sequencer had already decided. It was not committed.
        s.emitOutcome(now, c.seq, { verdict: 'rejected', reason: 'sequence-reused' }, r.version);
        continue;
      }
      const reason = r.rejections.get(c.seq);
      s.emitOutcome(now, c.seq, reason === undefined ? COMMITTED : { verdict: 'rejected', reason: REJECT_REASON_NAMES[reason] }, r.version);
    }
    s.resolvedSeq = Math.max(s.resolvedSeq, mark);
    this.goBack();
    // Never reuse a sequence number the sequencer has decided (a follower that lost its data).
    if (s.nextSeq <= mark) s.continueSeqAfter(mark);
    s.statusDirty = true;
    s.reentangleMethod = r.method;
    this.replacedIn = s.pair.persist({ kind: 'replaced', image: s, version: s.version });
  }

  private clearReorder(): void {
    this.reorder.clear();
    this.reorderBytes = 0;
    this.heldEpoch++;
  }

  // ---------------------------------------------------------------- own candidates

  queueOwn(seq: number, delta: EntryDelta, stamp: number): void {
    // It can wait for the peer: durable before anyone is told "pending".
    this.s.pair.persist({ kind: 'proposed', register: this.s.name, seq, delta, stamp });
  }

  secureOwn(): boolean {
    return false; // queueOwn made it durable
  }

  restored(): void {
    const s = this.s;
    if (s.own.length === 0) return;
    // They count as sent: the sequencer may have them.
    this.goBack();
    this.everSent = Math.max(this.everSent, s.own.last()!.seq);
  }

  replayed(): void {
    // Own outcomes in replayed records were reported before the restart (restorePending drops those candidates).
  }

  collapse(): number {
    return 0;
  }

  status(): StatusMsg {
    return this.s.status(this.s.log.base, this.heldRanges());
  }

  /** The out-of-order versions held, as ranges (at most MAX_HELD_RANGES, lowest first). */
  private heldRanges(): VersionRange[] {
    if (this.reorder.size === 0) return [];
    const vs = [...this.reorder.keys()].filter((v) => v > this.s.version + 1).sort((a, b) => a - b);
    const out: VersionRange[] = [];
    for (const v of vs) {
      const last = out[out.length - 1];
      if (last && v === last.to + 1) last.to = v;
      else if (out.length < MAX_HELD_RANGES) out.push({ from: v, to: v });
      else break;
    }
    return out;
  }

  // ---------------------------------------------------------------- inbound

  handle(now: number, m: RegisterMessage, raw: Uint8Array): void {
    switch (m.type) {
      case MsgType.Status:
        return this.onStatus(now, m);
      case MsgType.Propose:
        return this.s.pair.drop(
          now,
          'propose-to-follower',
          `${m.candidates.length} candidate(s) sent to the follower`,
          m.candidates.length,
        );
      case MsgType.Collapse:
        return this.onCollapse(now, m, raw);
      case MsgType.ReconMeta:
        return this.session?.onMeta(now, m);
      case MsgType.ReconNode:
        return this.session?.onNode(now, m);
      case MsgType.ReconEntries:
        return this.session?.onEntries(now, m);
      case MsgType.ReconDiff:
        return this.session?.onDiff(now, m);
      case MsgType.SnapChunk:
        return this.session?.onChunk(now, m);
      case MsgType.StreamData:
        return this.session?.onStreamData(now, m);
      default:
        return; // requests only a sequencer answers
    }
  }

  private onStatus(now: number, m: StatusMsg): void {
    const s = this.s;
    // Stale (reordered) if a little below what the sequencer announced; far below, the
    // earlier announcement was wrong (a sequencer that lost state, or a lie): start from this one.
    if (m.version < this.seqVersionSeen && m.version >= this.seqVersionSeen - SEND_WINDOW && !this.confirmsLower(now, m.version)) return;
    this.lowerStatus = undefined;
    // A re-entanglement target taken from the wrong announcement goes with it.
    if (s.reentangleTarget !== undefined && s.reentangleTarget > m.version) s.reentangleTarget = m.version;
    this.seqVersionSeen = m.version;
    this.seqLogBase = m.logBase;
    s.peerVersion = m.version;
    s.peerHash = m.hash;
    this.checkAlignment(now);
  }

  /** Whether a Status below what the sequencer announced repeats one two keepalives (or an RTO) old (see `lowerStatus`). */
  private confirmsLower(now: number, version: number): boolean {
    const l = this.lowerStatus;
    if (l === undefined || l.version !== version) {
      this.lowerStatus = { version, since: now };
      return false;
    }
    return now - l.since >= Math.max(this.s.pair.rto(), 2 * this.s.pair.keepaliveMs);
  }

  /** Decide whether the log can bring us to the sequencer, or reconciliation must. */
  private checkAlignment(now: number): void {
    const s = this.s;
    if (this.session !== undefined || s.peerHash === undefined) return;
    const st = s.pair.state;
    if (st === PairState.DECOHERENT || st === PairState.CLOSED) return;
    let trigger: LifecycleEvent | undefined;
    let detail = '';
    if (s.peerVersion < s.version || (s.peerVersion === s.version && !hashEquals(s.peerHash, s.state.hash))) {
      trigger = LifecycleEvent.HashMismatch;
      detail = `register ${s.name}: local v${s.version} h=${hashHex(s.state.hash)}, sequencer v${s.peerVersion} h=${hashHex(s.peerHash)}`;
    } else if (s.peerVersion > s.version && this.seqLogBase > s.version) {
      trigger = LifecycleEvent.UnfillableGap;
      detail = `register ${s.name}: at v${s.version}, sequencer log starts after v${this.seqLogBase}`;
    }
    if (trigger === undefined) return;
    if (st !== PairState.FORMING) s.pair.trigger(now, trigger, detail);
    // Behind the advertised log base with equal history: ask for the log diff first (§8.2.1).
    this.startReconcile(now, trigger === LifecycleEvent.UnfillableGap);
  }

  private startReconcile(now: number, diff = false): void {
    // A sequencer can make us reconcile again and again (each ends in a snapshot, O(state)):
    // sessions start at the pins' rate, 2 at once then one per second (§8.2).
    const at = this.reconcileRate.next(now);
    this.reconcileRate.take(at);
    this.session = new ReconRequester(this, at > now ? at : undefined, diff);
    this.clearReorder();
  }

  private onCollapse(now: number, m: CollapseMsg, raw: Uint8Array): void {
    const s = this.s;
    if (m.version > s.version + SEND_WINDOW && this.session === undefined) {
      // Past the send window (§8.1): the sequencer may not send it yet; nothing is kept.
      s.pair.drop(now, 'beyond-window', `register ${s.name}: v${m.version} with the local version at v${s.version}`);
      return;
    }
    if (m.version > this.seqVersionSeen) this.seqVersionSeen = m.version;
    if (this.session !== undefined) return; // the state is being replaced; the log catch-up follows
    if (m.version <= s.version) {
      s.statusDirty = true; // a duplicate: re-acknowledge
      return;
    }
    const invalid = this.invalidRecord(m);
    if (invalid !== undefined) {
      s.pair.drop(now, 'invalid-record', `register ${s.name}: v${m.version} ${invalid}`);
      return;
    }
    // Own deltas left out (§3.6.4) are put back only when the record is applied (applyWith): a
    // record held, then dropped or replaced, costs no copy of them (rev 1.32).
    if (m.version > s.version + 1) {
      this.hold(m, raw);
      return;
    }
    if (this.awaitingReplacement) {
      this.keepNext(m, raw);
      return;
    }
    const group = this.crossGroup(m);
    if ('wait' in group) {
      // Waiting for the other parts of a cross-register txn (§4.6).
      this.keepNext(m, raw);
      this.remember(this.reorder.get(m.version)!, group.wait);
      this.waitingOn = group.wait;
      return;
    }
    if (!this.applyWith(now, m, raw, group.members)) return;
    this.drainHeld(now);
  }

  /**
   * Why record `m` is one an honest sequencer never forms (rev 1.32), or undefined. A committed
   * op of the other register kind: the sequencer's check rejects it (wrong-register-kind), and
   * applied, it would be skipped here but throw in a replay (§7.4). A committed `cross` entry
   * other than the first (a cross starts a collapse of its own), or a `part` entry with others (a
   * part is its register's collapse alone): what crossGroup reads of a record is then its first
   * entry only (§4.6). One pass over the entries, as decoding them took; a record read in place
   * (sets and rejections) is not decoded for it.
   */
  private invalidRecord(m: CollapseMsg): string | undefined {
    const stream = this.s.cfg.kind === 'stream';
    const local = this.s.pair.localId;
    const peer = this.s.pair.peerId;
    const p = collapsePacked(m);
    if (p !== undefined) {
      if (stream && p.sets > 0) return 'commits a map op on a stream register';
      // scanPacked noted the first two origins named (-1: none) and whether there is a third.
      const o1 = p.origin1;
      const o2 = p.origin2;
      if (p.moreOrigins || (o1 >= 0 && o1 !== local && o1 !== peer) || (o2 >= 0 && o2 !== local && o2 !== peer))
        return `names origins other than the pair's two ends, ${local} and ${peer}`;
      return undefined;
    }
    const n = m.entries.length;
    const elided = m.elided ?? [];
    let k = 0;
    for (let i = 0; i < n; i++) {
      const e = m.entries[i];
      // Left out: one of our pending candidates, of this register's kind (put back when applied).
      if (k < elided.length && elided[k] === i) {
        k++;
        continue;
      }
      if (e.origin !== local && e.origin !== peer)
        return `names origin ${e.origin} at entry ${i} (a pair's entries are its two ends', ${local} and ${peer})`;
      if (e.verdict !== 'committed') continue;
      const d = e.delta;
      if (d.op === DeltaOp.Cross && i > 0) return `holds a cross entry at index ${i} (only the first may be one)`;
      if (d.op === DeltaOp.Part && n > 1) return `holds a part entry among ${n} entries (a part record has one)`;
      if (isStreamDelta(ownPart(d)) !== stream)
        return `commits a ${stream ? 'map' : 'stream'} op on a ${stream ? 'stream' : 'map'} register (entry ${i})`;
    }
    return undefined;
  }

  /**
   * Hold a record that arrived past a gap, within the reorder limits. A copy that differs from
   * the one held at its version replaces it (the sequencer's latest word on a version wins: a
   * record it re-formed after losing its tail, §10.1). Past the limits, records above this one
   * make room: they are resent, and holding the lower ones is what lets the register move (a
   * cross-register group, §4.6, may need a version below what is held).
   */
  private hold(m: CollapseMsg, raw: Uint8Array): void {
    const s = this.s;
    const old = this.reorder.get(m.version);
    if (old !== undefined && Buffer.compare(old.raw, raw) === 0) return;
    const limit = reorderByteLimit((s.cfg.holdQuota ?? s.cfg.quota).maxValueBytes);
    const room = (): boolean =>
      (old !== undefined || this.reorder.size < REORDER_LIMIT) && this.reorderBytes - (old?.raw.length ?? 0) + raw.length <= limit;
    while (!room()) {
      const top = Math.max(...this.reorder.keys());
      if (top <= m.version) return;
      this.unhold(top);
    }
    this.keep(m, raw);
    s.statusDirty = true; // tell the sequencer what arrived past the gap
  }

  /** Hold the next record, whatever the limits (the one record at the next version; records above it make room). */
  private keepNext(m: CollapseMsg, raw: Uint8Array): void {
    this.keep(m, raw);
    const limit = reorderByteLimit((this.s.cfg.holdQuota ?? this.s.cfg.quota).maxValueBytes);
    while (this.reorder.size > REORDER_LIMIT || this.reorderBytes > limit) {
      const top = Math.max(...this.reorder.keys());
      if (top <= m.version) break;
      this.unhold(top);
    }
  }

  /** Hold a record at its version, replacing a copy held there. */
  private keep(m: CollapseMsg, raw: Uint8Array): void {
    this.unhold(m.version);
    this.reorder.set(m.version, { msg: m, raw: unpinned(raw) });
    this.reorderBytes += raw.length;
    this.heldEpoch++;
  }

  private unhold(v: number): Held | undefined {
    const e = this.reorder.get(v);
    if (e === undefined) return undefined;
    this.reorder.delete(v);
    this.reorderBytes -= e.raw.length;
    this.heldEpoch++;
    return e;
  }

  /**
   * Apply held records in version order while the next one is held and is not waiting for
   * the other parts of a cross-register txn. Returns the registers whose version moved (this
   * one, and the part records' registers of a group it applied); `waitingOn` is set to the
   * register the next record waits for. The pair calls it after each step on every register
   * holding its next record, then again on those waiting for a register that moved.
   */
  drainHeld(now: number): readonly Follower[] {
    const s = this.s;
    this.waitingOn = undefined;
    // The common case: nothing held next, nothing to build. A replacement not durable yet: wait for it.
    if (!this.reorder.has(s.version + 1) || this.awaitingReplacement) return NONE_MOVED;
    const moved = new Set<Follower>();
    for (let next = this.reorder.get(s.version + 1); next && this.session === undefined; next = this.reorder.get(s.version + 1)) {
      const group = this.groupOf(next);
      if ('wait' in group) {
        this.waitingOn = group.wait;
        break;
      }
      this.unhold(next.msg.version);
      moved.add(this);
      if (!this.applyWith(now, next.msg, next.raw, group.members)) break;
      for (const g of group.members) moved.add(g.follower);
    }
    if (moved.size > 0) for (const v of [...this.reorder.keys()]) if (v <= s.version) this.unhold(v);
    return [...moved];
  }

  /** Whether the record at the next version is held (waiting, or not looked at yet). */
  get holdsNext(): boolean {
    return this.reorder.has(this.s.version + 1);
  }

  /** The record held at `v` (a part record a sibling's anchor record is waiting for). */
  heldRecord(v: number): CollapseMsg | undefined {
    return this.reorder.get(v)?.msg;
  }

  /** Reconciling, or its replacement not durable yet: a record naming one of its parts waits (crossGroup). */
  private get busy(): boolean {
    return this.session !== undefined || this.awaitingReplacement;
  }

  /**
   * crossGroup for held record `h`, unless it waits still for the register it waited on when last
   * looked at (WaitMemo): the pair drains after every payload, and a waiting record was otherwise
   * walked again each time to the same answer (rev 1.32).
   */
  private groupOf(h: Held): { wait: Follower } | { members: CrossMember[] } {
    const w = this.waitMemo;
    if (
      w !== undefined &&
      w.held === h &&
      w.on.version === w.version &&
      w.on.heldEpoch === w.epoch &&
      w.on.busy === w.busy &&
      this.s.pair.sibling(w.on.name)?.follower === w.on
    )
      return { wait: w.on };
    const group = this.crossGroup(h.msg);
    if ('wait' in group) this.remember(h, group.wait);
    else this.waitMemo = undefined;
    return group;
  }

  private remember(held: Held, on: Follower): void {
    this.waitMemo = { held, on, version: on.version, epoch: on.heldEpoch, busy: on.busy };
  }

  /**
   * What must be applied together with record `m` (§4.6): for each other register a committed
   * cross entry of `m` names and that has not reached the part's version, the part records, which
   * must be that register's next versions and held; 'wait' until they are. A part record waits
   * for its anchor's record (which applies it), unless the anchor register is past that version
   * already (it reconciled) or unknown (the hash then decides).
   */
  private crossGroup(m: CollapseMsg): { wait: Follower } | { members: CrossMember[] } {
    if (collapsePacked(m) !== undefined) return NO_MEMBERS; // sets and rejections only: no cross-register entry
    const s = this.s;
    const members = new Map<Follower, number[]>();
    // A cross entry is a record's first and a part a record's only entry (invalidRecord refuses
    // others): the first entry says it all, whatever the record's length.
    const e = m.entries[0];
    if (e === undefined || e.verdict !== 'committed') return NO_MEMBERS;
    const d = e.delta;
    if (d.op === DeltaOp.Part) {
      const a = s.pair.sibling(d.anchor)?.follower;
      return a !== undefined && a !== this && a.version < d.anchorVersion ? { wait: a } : NO_MEMBERS;
    }
    if (d.op !== DeltaOp.Cross) return NO_MEMBERS;
    for (let i = 1; i < d.parts.length; i++) {
      const p = d.parts[i];
      const f = s.pair.sibling(p.register)?.follower;
      if (f === undefined || f === this || f.version >= p.at) continue;
      const vs = members.get(f) ?? [];
      vs.push(p.at);
      members.set(f, vs);
    }
    const out: CrossMember[] = [];
    for (const [f, vs] of members) {
      if (f.reconciling || f.awaitingReplacement) return { wait: f };
      vs.sort((a, b) => a - b);
      for (let i = 0; i < vs.length; i++) {
        const h = vs[i] === f.version + 1 + i ? f.heldRecord(vs[i]) : undefined;
        const ours = (e: CollapseEntry): boolean =>
          e.verdict === 'committed' && e.delta.op === DeltaOp.Part && e.delta.anchor === s.name && e.delta.anchorVersion === m.version;
        if (h === undefined || !h.entries.every(ours)) return { wait: f };
      }
      out.push({ follower: f, versions: vs });
    }
    return { members: out };
  }

  /**
   * Apply `m` and the part records of `group` in one turn, or nothing if one of them is over this
   * host's quota. A group is logged only if every record of it hashes as the sequencer's: logged
   * in part, a restart would cut it (§4.6, `keptRecords`), and with it records after it whose
   * outcomes the peer was told. If one diverges, none is logged and each register reconciles.
   */
  private applyWith(now: number, m: CollapseMsg, raw: Uint8Array | undefined, group: CrossMember[]): boolean {
    if (m.elided) {
      // Our own candidates' deltas were left out (§3.6.4): put them back now it applies (held, it
      // kept its wire form), so the record is the sequencer's, octet for octet; those octets are
      // encoded only if it is logged (logApplied).
      const whole = this.restoreOwn(m);
      if (!whole) {
        const s = this.s;
        s.pair.drop(
          now,
          'elided-unknown',
          `register ${s.name}: v${m.version} leaves out a delta that is not our pending candidate, or is over MAX_MESSAGE_LEN whole`,
        );
        return false;
      }
      m = whole;
      raw = undefined;
    }
    if (!this.admits(now, m)) return false;
    for (const g of group) for (const v of g.versions) if (!g.follower.admits(now, g.follower.heldRecord(v)!)) return false;
    if (group.length === 0) {
      this.applyCollapse(now, m, raw);
      return true;
    }
    const records: { f: Follower; m: CollapseMsg; raw: Uint8Array | undefined }[] = [{ f: this, m, raw }];
    for (const g of group)
      for (const v of g.versions) {
        const e = g.follower.unhold(v);
        if (e !== undefined) records.push({ f: g.follower, m: e.msg, raw: e.raw });
      }
    const diverged = records.filter((r) => !r.f.applyEntries(r.m));
    if (diverged.length === 0) for (const r of records) r.f.logApplied(now, r.m, r.raw);
    else {
      diverged[0].f.diverged(now, diverged[0].m);
      for (const f of new Set(records.map((r) => r.f))) if (f.session === undefined) f.startReconcile(now);
    }
    return true;
  }

  /**
   * The record with each elided entry's delta taken from our pending candidates; undefined if one
   * is not ours or not pending, or if the whole record is over MAX_MESSAGE_LEN.
   */
  private restoreOwn(m: CollapseMsg): CollapseMsg | undefined {
    const s = this.s;
    const entries = m.entries.slice();
    // Each pending candidate at most once (seqs rising, as an honest record decides them), and never a
    // cross-register txn (its record carries versions our copy lacks, §3.6.4): a record cannot make
    // us expand one held value many times over.
    let last = 0;
    let bytes = 0;
    for (const i of m.elided ?? []) {
      const e = entries[i];
      if (e.verdict !== 'committed' || e.origin !== s.pair.localId || e.seq <= last) return undefined;
      last = e.seq;
      const own = ownBySeq(s.own, e.seq);
      if (!own || own.delta.op === DeltaOp.Cross) return undefined;
      bytes += encodedEntryDeltaLen(own.delta);
      if (bytes > MAX_MESSAGE_LEN) return undefined;
      entries[i] = { origin: e.origin, seq: e.seq, verdict: 'committed', delta: own.delta };
    }
    const whole: CollapseMsg = { type: MsgType.Collapse, register: m.register, version: m.version, hash: m.hash, entries };
    // Whole, at most what a sequencer sends whole (rev 1.34): it is logged so, and a larger record
    // is beyond what a log's reader takes back (MAX_PAIR_RECORD): a restart would cut it and all after it.
    return encodedCollapseLen(whole) > MAX_MESSAGE_LEN ? undefined : whole;
  }

  /** Whether record `m` keeps this register within this host's quota; counted as a violation if not. */
  admits(now: number, m: CollapseMsg): boolean {
    const s = this.s;
    if (this.packedWithinQuota(m)) return true;
    // The sequencer's verdicts bind, but not past this host's own quota: check the whole record first.
    const q = s.cfg.holdQuota ?? s.cfg.quota;
    const quota = new QuotaCheck(s.state, q);
    for (const e of m.entries) {
      if (e.verdict === 'committed' && quota.admit(ownPart(e.delta), m.version) !== 0) {
        s.pair.drop(
          now,
          'quota-violation',
          `register ${s.name}: v${m.version} would exceed the quota (${q.maxKeys} keys, ${q.maxBytes} octets)`,
        );
        return false;
      }
    }
    return true;
  }

  /**
   * Whether a record read in place is within quota even if every set were a new key of its full
   * size (the bound QuotaCheck counts first: when it holds, the exact count admits the record too,
   * so this decides as QuotaCheck does); false sends the record to QuotaCheck.
   */
  private packedWithinQuota(m: CollapseMsg): boolean {
    const p = collapsePacked(m);
    const st = this.s.state;
    if (p === undefined || !(st instanceof MapState)) return false;
    const q = this.s.cfg.holdQuota ?? this.s.cfg.quota;
    return p.maxValue <= q.maxValueBytes && st.size() + p.sets <= q.maxKeys && st.fullTransferBytes() + p.growth <= mapMaxBytes(q);
  }

  /** Apply one record in order (admitted already); `raw` undefined: its octets are to be encoded (own deltas put back). */
  private applyCollapse(now: number, m: CollapseMsg, raw: Uint8Array | undefined): void {
    const s = this.s;
    const p = collapsePacked(m);
    if (p !== undefined && raw !== undefined && s.state instanceof MapState) return this.applyPacked(now, m, raw, p, s.state);
    if (this.applyEntries(m)) this.logApplied(now, m, raw);
    else this.diverged(now, m);
  }

  /** The entries of record `m` applied to the state, not logged yet; whether the state then hashes as the sequencer's. */
  private applyEntries(m: CollapseMsg): boolean {
    const s = this.s;
    const v = m.version;
    for (const e of m.entries) {
      // Follow the sequencer's verdicts; a local precondition that disagrees means divergence, caught by the hash.
      if (e.verdict === 'committed') {
        const st = s.state;
        const d = ownPart(e.delta);
        if (st.check(d) === 0) st.apply(d, v);
        else for (const o of d.op === DeltaOp.Txn ? d.ops : [d]) forceApply(st, o, v);
        if (e.delta.op === DeltaOp.Part) continue; // numbered in its anchor register: no mark here
      } else if (e.origin === s.pair.localId) {
        // Our own txn rejected: the state here is the sequencer's before this entry, so the failing op is the same.
        this.noteOwnRejection(e.seq, e.reason, v);
      }
      s.mark(e.origin, e.seq);
    }
    s.version = v;
    return hashEquals(s.state.hash, m.hash);
  }

  /** Record `m`, applied and hashing as the sequencer's: logged, made durable, its outcomes told. */
  private logApplied(now: number, m: CollapseMsg, raw: Uint8Array | undefined): void {
    const s = this.s;
    const rec = { version: m.version, hash: m.hash, encoded: raw === undefined ? encodeMessage(m) : unpinned(raw) };
    s.log.append(rec, m.version);
    s.pair.persist({ kind: 'append', register: s.name, rec });
    s.afterCollapse(now, m.version, m.entries);
    s.acknowledgeLater();
  }

  /** After record `m` the state does not hash as the sequencer's: nothing of this version is logged or persisted; reconciliation replaces the state. */
  private diverged(now: number, m: CollapseMsg): void {
    const s = this.s;
    s.pair.trigger(
      now,
      LifecycleEvent.HashMismatch,
      `register ${s.name}: after v${m.version} local h=${hashHex(s.state.hash)}, sequencer h=${hashHex(m.hash)}`,
    );
    this.startReconcile(now);
  }

  /**
   * applyCollapse for a record read in place (sets and rejections, a map register): each set
   * goes from the datagram's bytes into the map, and the entries are decoded only if someone
   * reads them (the collapse event's, from the log's copy; own outcomes).
   */
  private applyPacked(now: number, m: CollapseMsg, raw: Uint8Array, p: PackedEntries, st: MapState): void {
    const s = this.s;
    const v = m.version;
    const local = s.pair.localId;
    let own = false;
    // Marks: the last seq of each run of one origin (the same final marks as one set per entry).
    let origin = -1;
    let seq = 0;
    const c = new PackedCursor(p);
    while (c.next()) {
      if (c.verdict === 0) st.setAt(c.buf, c.koff, c.klen, c.voff, c.vlen, v);
      else if (c.origin === local) this.noteOwnRejection(c.seq, c.verdict as RejectReason, v);
      if (c.origin === local) own = true;
      if (c.origin !== origin) {
        if (origin >= 0) s.mark(origin, seq);
        origin = c.origin;
      }
      seq = c.seq;
    }
    if (origin >= 0) s.mark(origin, seq);
    s.version = v;
    if (!hashEquals(st.hash, m.hash)) {
      s.pair.trigger(
        now,
        LifecycleEvent.HashMismatch,
        `register ${s.name}: after v${v} local h=${hashHex(st.hash)}, sequencer h=${hashHex(m.hash)}`,
      );
      this.startReconcile(now);
      return;
    }
    const rec = { version: v, hash: m.hash, encoded: unpinned(raw) };
    s.log.append(rec, v);
    s.pair.persist({ kind: 'append', register: s.name, rec });
    s.afterCollapseLazy(now, v, rec.encoded, own);
    s.acknowledgeLater();
  }

  /**
   * Which op of our rejected txn failed. A cross-register txn's is found against this end's
   * registers as they stand (the anchor as the sequencer saw it; another register may be behind
   * or ahead of the state the sequencer checked, so this is the best this end can tell).
   */
  private noteOwnRejection(seq: number, reason: RejectReason, v: number): void {
    const s = this.s;
    let own: OwnCandidate | undefined;
    for (const c of s.own) if (c.seq === seq) own = c;
    if (own?.delta.op !== DeltaOp.Cross) return s.noteFailedOp(seq, reason);
    const target = (name: string): CrossTarget | undefined => {
      const r = name === s.name ? undefined : s.pair.sibling(name);
      return r && { name, state: r.state, version: r.version, quota: r.cfg.quota };
    };
    const self: CrossTarget = { name: s.name, state: s.state, version: s.version, quota: s.cfg.quota };
    s.noteFailedOp(seq, reason, decideCross(own.delta, self, new QuotaCheck(s.state, s.cfg.quota), v, target).failedOp);
  }

  // ---------------------------------------------------------------- re-entanglement

  beginReentangle(): void {
    // The target comes from the sequencer's next status, not one from before the cut.
    this.s.reentangleTarget = undefined;
    this.s.peerHash = undefined;
  }

  aligned(): boolean {
    const s = this.s;
    if (this.session !== undefined || s.peerHash === undefined) return false;
    // The sequencer's status when we heard it again sets the target: everything committed during the cut.
    if (s.reentangleTarget === undefined) s.reentangleTarget = s.peerVersion;
    if (s.version < s.reentangleTarget) return false;
    return s.version !== s.peerVersion || hashEquals(s.state.hash, s.peerHash);
  }

  settled(): boolean {
    return this.s.peerVersion <= this.s.version;
  }

  idle(): boolean {
    return this.session === undefined && this.retransmitAt === undefined && this.reorder.size === 0 && this.s.peerVersion <= this.s.version;
  }

  // ---------------------------------------------------------------- timers and sending

  deadlines(): Partial<Record<FollowerTimer, number>> {
    const t: Partial<Record<FollowerTimer, number>> = {};
    const session = this.session;
    if (session === undefined) {
      if (this.retransmitAt !== undefined) t.retransmit = this.retransmitAt;
      return t;
    }
    // A session sets retransmitAt only once its held-back start has passed: at most one of the two is armed.
    if (session.notBefore !== undefined) t['recon-start'] = session.notBefore;
    if (session.retransmitAt !== undefined) t['recon-retransmit'] = session.retransmitAt;
    return t;
  }

  handleTimeout(now: number): boolean {
    let retransmitted = false;
    for (const timer of FOLLOWER_TIMERS) if (this.fire(now, timer)) retransmitted = true;
    return retransmitted;
  }

  /** Fire `timer` if it is due; true if it was a retransmission. */
  private fire(now: number, timer: FollowerTimer): boolean {
    switch (timer) {
      case 'retransmit':
        // Checked during a reconciliation too (only not polled then).
        if (this.retransmitAt === undefined || now < this.retransmitAt) return false;
        this.retransmitAt = undefined;
        // Every candidate has its outcome: nothing to resend, no backoff (the timer is not cancelled as outcomes arrive).
        if (this.s.own.length === 0) return false;
        {
          // The sequencer decides in seq order: the Propose carrying the oldest candidate without an outcome is the
          // one to wait for. Sent less than one RTO ago, its outcome may still come: wait until then, no resend, no
          // backoff (rev 1.19). Armed once at the first Propose, the timer used to expire every RTO under a steady
          // load and resend a window the sequencer was deciding (issue 16); a lost Propose is still resent one RTO
          // after it was sent, as a per-packet time threshold (RFC 9002 §6.1.2).
          const oldest = this.s.own.peek()!.seq;
          const sentAt = this.sentAtOf(oldest);
          if (sentAt === undefined && this.sentSeqUpTo < oldest) return false; // nothing sent waits for an outcome
          if (sentAt !== undefined && now < sentAt + this.s.pair.rto()) {
            this.retransmitAt = sentAt + this.s.pair.rto();
            return false;
          }
        }
        // Go back to what the sequencer has decided and propose again from there.
        this.goBack();
        this.s.statusDirty = true;
        return true;
      case 'recon-start':
        // A held-back start that is due: fill() sends it now (or when the peer is reachable).
        if (this.session?.notBefore !== undefined && now >= this.session.notBefore) this.session.notBefore = undefined;
        return false;
      case 'recon-retransmit':
        return this.session?.onTimeout(now) === true;
      default: {
        const _unhandled: never = timer; // a timer added to FOLLOWER_TIMERS needs its case here
        return _unhandled;
      }
    }
  }

  fill(now: number, b: PayloadBuilder): void {
    if (this.session !== undefined) this.session.fill(now, b);
    else this.fillProposals(now, b);
  }

  /**
   * A request that starts a session (WANT_META) follows our Status in its datagram (§8.2): the
   * sequencer reuses its pin only while it is not behind the version it last heard from us, and
   * a pin behind what we applied would take back versions whose outcomes we reported.
   */
  startsSession(now: number): boolean {
    return this.session !== undefined && this.session.startsNow(now);
  }

  /** Every own candidate without an outcome counts as unsent again (a retransmission, a restart, a reset). */
  private goBack(): void {
    this.sentSeqUpTo = this.s.resolvedSeq;
    this.proposesInFlight.clear();
    this.proposesSentAt.clear();
  }

  /** When the Propose in flight that carries own candidate `seq` was sent (undefined: none in flight carries it). */
  private sentAtOf(seq: number): number | undefined {
    const inFlight = this.proposesInFlight;
    for (let i = 0; i < inFlight.length; i++) if (inFlight.at(i) >= seq) return this.proposesSentAt.at(i);
    return undefined;
  }

  private fillProposals(now: number, b: PayloadBuilder): void {
    const s = this.s;
    const own = s.own;
    // The proposal window (§7.5): a Propose is in flight until its last candidate has its outcome.
    // Unbounded, a proposer with 65,536 pending sent them all at once, ~2,400 datagrams, more than
    // the sequencer's receive buffer holds while it fsyncs: each loss a go-back of all of them.
    const inFlight = this.proposesInFlight;
    const oldest = own.peek()?.seq ?? Infinity;
    while (inFlight.length > 0 && inFlight.peek()! < oldest) {
      inFlight.shift();
      this.proposesSentAt.shift();
    }
    if (inFlight.length >= PROPOSE_WINDOW) return;
    // The first not yet sent: a binary search, since a walk from the front is O(pending) per
    // datagram (with 65,536 pending, most of a loaded proposer's time: issue 16's scale bench).
    let i = firstAfter(own, this.sentSeqUpTo);
    if (i >= own.length || this.crossHeldBack(own.at(i))) return;
    // Name + counts overhead, then candidates while they fit.
    let room = b.room - (8 + varintLen(s.nameBytes) + s.nameBytes + 3);
    const candidates: PairCandidate[] = [];
    for (; i < own.length; i++) {
      const c: OwnCandidate = own.at(i);
      if (this.crossHeldBack(c)) break;
      const sz = varintLen(s.pair.localId) + varintLen(c.seq) + encodedEntryDeltaLen(c.delta);
      if (sz > room) break;
      room -= sz;
      candidates.push({ origin: s.pair.localId, seq: c.seq, delta: c.delta });
    }
    let key: string | undefined;
    if (candidates.length === 0) {
      // A candidate larger than any payload goes alone, fragmented (§3.4), named by its seq.
      const c = own.at(i);
      key = `propose/${s.name}/${c.seq}`;
      // Under way already (a retransmission timer fired): nothing to encode again.
      if (b.holdsLarge(key)) return this.sent(now, c.seq);
      // A full fragment queue would refuse it: not encoded until there is room (an upper bound of its size).
      const bound =
        16 + varintLen(s.nameBytes) + s.nameBytes + varintLen(s.pair.localId) + varintLen(c.seq) + encodedEntryDeltaLen(c.delta);
      if (bound > b.limit && !b.canTakeLarge(bound)) return;
      candidates.push({ origin: s.pair.localId, seq: c.seq, delta: c.delta });
    }
    const m: ProposeMsg = { type: MsgType.Propose, register: s.name, base: own.peek()!.seq, candidates };
    if (key === undefined) {
      if (!b.addMessage(m)) return;
    } else {
      const raw = encodeMessage(m);
      if (raw.length <= b.limit) return; // it fits an empty payload: the next datagram takes it whole
      if (!b.add(raw, key)) return;
    }
    this.sent(now, candidates[candidates.length - 1].seq);
  }

  /**
   * A cross-register txn waits (and every later own candidate of this register with it) until
   * this end's candidates proposed before it on its other registers have their outcome: the
   * sequencer then decides it after them, as the proposer wrote them, whatever the network
   * reorders (an append it names at a stream's length finds that length, §4.6).
   */
  private crossHeldBack(c: OwnCandidate): boolean {
    if (c.delta.op !== DeltaOp.Cross) return false;
    const at = c.stamp ?? 0;
    return c.delta.parts.slice(1).some((p) => {
      const oldest = this.s.pair.sibling(p.register)?.oldestOwnStamp;
      return oldest !== undefined && oldest < at;
    });
  }

  /** Own candidates up to `seq` are sent (or under way as fragments). */
  private sent(now: number, seq: number): void {
    if (seq > this.sentSeqUpTo) {
      this.proposesInFlight.push(seq);
      this.proposesSentAt.push(now);
    }
    this.sentSeqUpTo = seq;
    this.everSent = Math.max(this.everSent, seq);
    if (this.retransmitAt === undefined) this.retransmitAt = now + this.s.pair.rto();
  }
}

/** The index of the first own candidate numbered above `seq` (own.length if none): the own list is in rising seq order. */
function firstAfter(own: Deque<OwnCandidate>, seq: number): number {
  let lo = 0;
  let hi = own.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (own.at(mid).seq <= seq) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** The own candidate numbered `seq`: the own list is in rising seq order (pushed so, decided from the front), so a binary search. */
function ownBySeq(own: Deque<OwnCandidate>, seq: number): OwnCandidate | undefined {
  let lo = 0;
  let hi = own.length - 1;
  while (lo <= hi) {
    const mid = (lo + hi) >>> 1;
    const c = own.at(mid);
    if (c.seq === seq) return c;
    if (c.seq < seq) lo = mid + 1;
    else hi = mid - 1;
  }
  return undefined;
}
