/**
 * The sequencer's half of a register replica (docs/PROTOCOL.md §7): it orders every
 * candidate (its own and the follower's, each origin in sequence order), evaluates
 * preconditions and the quota, commits, and ships each collapse as a log record carrying
 * the resulting hash; it retransmits what the follower has not acknowledged and answers
 * its reconciliation requests from pins (ReconResponder).
 */
import { varintLen } from '../../wire/buffer.js';
import { encodedEntryDeltaLen, ownPart, type EntryDelta } from '../../wire/cross.js';
import { DeltaOp, RejectReason, type Delta } from '../../wire/delta.js';
import {
  MsgType,
  collapsePacked,
  decodeMessages,
  encodeCollapse,
  type CollapseEntry,
  type CollapseMsg,
  type Message,
  type PairCandidate,
  type ProposeMsg,
  type StatusMsg,
  type VersionRange,
} from '../../wire/messages.js';
import { PackedCursor } from '../../wire/packed.js';
import type { ReconDrop, ResponderHost } from '../reconcile/host.js';
import { ReconResponder } from '../reconcile/reentangle.js';
import { latin1 } from '../reconcile/diff.js';
import { hashEquals, hashHex } from '../register/hash.js';
import { MapState } from '../register/map.js';
import { QuotaCheck } from '../register/quota.js';
import type { StreamState } from '../register/stream.js';
import { Deque } from '../util/deque.js';
import { decideCross, type CrossTarget } from './cross.js';
import { LifecycleEvent, PairState } from './lifecycle.js';
import type { PayloadBuilder } from './payload.js';
import { copyEntryDelta, SEND_WINDOW, SEQ_LEASE, SEQUENCER_TIMERS, type RoleMachine, type SequencerTimer, type Shared } from './shared.js';
import type { OwnCandidate, RegisterMessage } from './types.js';
import type { LogRecord, LogView } from './log.js';

/** Octets an early peer candidate costs beside its delta (map entry, object, seq). */
const EARLY_OVERHEAD = 64;
/** Octets of early peer candidates one register holds, as the follower's reorder buffer: 1 MiB or 4 values. */
const earlyByteLimit = (maxValueBytes: number): number => Math.max(1 << 20, 4 * maxValueBytes);
const earlyCost = (c: PairCandidate): number => encodedEntryDeltaLen(c.delta) + EARLY_OVERHEAD;

/** Attempts, an RTO apart, at sending a large record without the follower's own delta before sending it whole (§3.6.4). */
const ELIDED_TRIES = 3;
/** Room kept beside a collapse record in one payload: an Ack and a Status. */
const COLLAPSE_SLACK = 160;
const MAX_ENTRIES_PER_COLLAPSE = 255;
/** Gaps of fewer octets of records than this are always replayed from the log (costing them is not worth it). */
const GAP_COSTING_MIN_BYTES = 4096;
/** Records decoded to cost a gap; a longer gap is extrapolated from its most recent ones. */
const GAP_COSTING_MAX = 4096;
/** Bytes of tree summaries a reconciliation spends per differing key (measured: ~650 at 10^6 keys, less below). */
const RECONCILE_OVERHEAD_PER_KEY = 400;
/** A ReconNode message: 16 children of (count varint, 8-byte hash) plus framing. */
const RECON_NODE_BYTES = 190;
/** Octets a diff part costs beside its entries: frame header and AEAD tag, message header, an Ack. */
const DIFF_PART_OVERHEAD = 64;
/** Octets a diff costs once: the request, the ReconMeta, the Statuses that close it. */
const DIFF_FIXED_BYTES = 200;
/** A diff replaces a replay only when the replay costs this much more (the diff's estimate is close, not exact). */
const DIFF_MARGIN = 1.05;

/**
 * The keys a logged Collapse record's committed entries write (for a cross txn, this register's
 * part); `written` learns the octets each write's key and value take.
 */
function recordKeys(rec: LogRecord, written?: (octets: number) => void): Uint8Array[] {
  const m = decodeMessages(rec.encoded).messages[0] as CollapseMsg;
  const out: Uint8Array[] = [];
  const packed = collapsePacked(m);
  if (packed !== undefined) {
    // Sets and rejections only: read in place, as the follower applies them. (Reading `entries`
    // would build objects and, the first time, rewrite a field of the decoded Collapse that the
    // steady state never rewrites: V8 would deoptimise the decoder in the middle of a catch-up.)
    for (const c = new PackedCursor(packed); c.next();) {
      if (c.verdict !== 0) continue;
      out.push(c.buf.subarray(c.koff, c.koff + c.klen));
      written?.(c.klen + c.vlen);
    }
    return out;
  }
  for (const e of m.entries) {
    if (e.verdict !== 'committed') continue;
    const own = ownPart(e.delta);
    for (const d of own.op === DeltaOp.Txn ? own.ops : [own]) {
      if (!('key' in d)) continue;
      out.push(d.key);
      written?.(d.key.length + ('value' in d ? d.value.length : 0));
    }
  }
  return out;
}

/**
 * What costGap reads of a run [lo, hi] of the log's most recent records, kept from one costing to
 * the next so that each record is decoded once however often a follower re-entangles (a follower
 * can start a re-entanglement with two datagrams: Close{GoingAway}, then a Status at an old
 * version). For any `from` in [lo, hi] it gives exactly what a scan of [from, hi] gives: the
 * distinct keys written (a key is written in [from, hi] iff its latest write in [lo, hi] is at
 * or after `from`), the keys written counted with repeats, and the octets of those writes.
 * A record, once logged, never changes: the run stays true of the log while the log still holds
 * the very record at `hi` (a reset drops every record; those logged after it are new objects).
 */
class GapScan {
  /** Each key written in [lo, hi], by the latest version that writes it. */
  private readonly latest = new Map<string, number>();
  /** By version − lo: the keys whose latest write in [lo, hi] it is. */
  private readonly latestAt: number[] = [];
  /** By version − lo: the keys its record writes (with repeats) and their octets. */
  private readonly entriesAt: number[] = [];
  private readonly writtenAt: number[] = [];
  private hi: number;
  private hiRec: LogRecord | undefined;

  constructor(private readonly lo: number) {
    this.hi = lo - 1;
  }

  /** Whether it can answer for [from, to] of `log` (extended to `to`) in at most 2·GAP_COSTING_MAX records. */
  fits(log: LogView, from: number, to: number): boolean {
    return from >= this.lo && to >= this.hi && to - this.lo < 2 * GAP_COSTING_MAX && log.get(this.hi) === this.hiRec;
  }

  /** Read the records after `hi` through `to`; returns how many were decoded. */
  extend(log: LogView, to: number): number {
    const from = this.hi + 1;
    for (let v = from; v <= to; v++) {
      let entries = 0;
      let written = 0;
      this.latestAt.push(0);
      for (const k of recordKeys(log.get(v)!, (octets) => (written += octets))) {
        const key = latin1(k);
        const prev = this.latest.get(key);
        if (prev !== undefined) this.latestAt[prev - this.lo]--;
        this.latest.set(key, v);
        this.latestAt[v - this.lo]++;
        entries++;
      }
      this.entriesAt.push(entries);
      this.writtenAt.push(written);
    }
    this.hi = to;
    this.hiRec = log.get(to);
    return Math.max(0, to - from + 1);
  }

  /** What a scan of [from, hi] finds: O(hi − from), at most GAP_COSTING_MAX additions, no decoding. */
  scan(from: number): { keys: number; entries: number; written: number } {
    let keys = 0;
    let entries = 0;
    let written = 0;
    for (let i = from - this.lo; i <= this.hi - this.lo; i++) {
      keys += this.latestAt[i];
      entries += this.entriesAt[i];
      written += this.writtenAt[i];
    }
    return { keys, entries, written };
  }
}

export class Sequencer implements RoleMachine, ResponderHost {
  readonly role = 'sequencer';
  /** The sequencer keeps collapsing whatever the pair's state. */
  readonly freezesWhenIncoherent = false;
  readonly reconciling = false;
  readonly responder: ReconResponder;

  /**
   * Candidates waiting for the next collapse, in arrival order (each origin in sequence order),
   * each stamped in the pair's order across registers (a cross-register txn is decided after
   * what arrived before it on its other registers, §4.6).
   */
  private readonly pending = new Deque<PairCandidate & { stamp: number }>();
  /**
   * Own candidates in the pending record (secureOwn, or restored at a load), until decided: a
   * restart proposes them again (§10.1). Bounded by the own list (maxPending).
   */
  private readonly secured = new Set<number>();
  private peerPendingHigh = 0;
  /**
   * Peer candidates that arrived past a gap in the peer's sequence (a reordered Propose), by
   * seq, until the gap fills (§7.2, rev 1.37). Dropped, each cost the follower a retransmission
   * timeout, and a burst shuffled by the network drained one in-order run per RTO. At most
   * maxPending of them (an honest follower has no more undecided) and earlyByteLimit octets.
   */
  private readonly early: PairCandidate[] = [];
  /** Octets `early` holds (deltas as encoded, plus EARLY_OVERHEAD each). */
  private earlyBytes = 0;
  /**
   * Rejections of peer candidates the peer has not yet acknowledged (§8.5), seq → reason, in
   * seq order (bounded by the receive window, §7.2). Durable: a restart rebuilds it from the
   * snapshot and the replayed log (restoreRejections, replayed), so a follower that reconciles
   * after it still learns every rejection of its candidates.
   */
  readonly peerRejections = new Map<number, RejectReason>();
  /** The highest seq in peerRejections while it is not empty (keepRejection). */
  private rejectionsHigh = 0;
  private peerLatestVersion = -1;
  private peerResolvedSeq = 0;

  // Sending state.
  private sentUpTo = 0;
  /** The peer was out of contact: the next status resets what we consider sent. */
  private goBack = false;
  /** Versions the follower reported holding out of order (its latest status). */
  private peerHeld: VersionRange[] = [];
  /** The acknowledged version at the last fast retransmit (one per gap). */
  private fastRetransmitAt = -1;
  /** Versions at or below this are not served from the log (reconciliation is cheaper). */
  private servedBase = 0;
  private gapCosted = true;
  /** The records costGap last read, for the next costing (dropped once the pair is coherent again). */
  private gapScan: GapScan | undefined;
  /** Log records decoded to cost gaps, over the sequencer's life (a measure of costGap's work). */
  gapRecordsDecoded = 0;
  /** The follower version the costing chose a log diff for (§8.1), if it did. */
  private diffSince: number | undefined;
  private retransmitAt: number | undefined;
  /** When the responder's sliced work (chunking a pin) should continue. */
  private workDueAt: number | undefined;
  /**
   * Large records sent without the follower's own delta (§3.6.4), by version: how many times,
   * an RTO apart, while the follower waited for that very record, and the last. After
   * ELIDED_TRIES the record goes whole (the follower may not hold the candidate).
   */
  private readonly elidedSent = new Map<number, { n: number; at: number }>();
  /**
   * The records of the last SEND_WINDOW versions that commit follower candidates, encoded with
   * those deltas left out (§3.6.4), made when the record is sealed: the form sent first, so a
   * follower's write crosses the network once. A record without one (older, or replayed after
   * a restart) goes whole unless it is larger than a payload.
   */
  private readonly elidedForms = new Map<number, Uint8Array>();

  constructor(private readonly s: Shared) {
    this.responder = new ReconResponder(this);
  }

  // ---------------------------------------------------------------- ResponderHost

  get name(): string {
    return this.s.name;
  }

  get version(): number {
    return this.s.version;
  }

  get state(): MapState | StreamState {
    return this.s.state;
  }

  get origins(): ReadonlyMap<number, number> {
    return this.s.origins;
  }

  get peerId(): number {
    return this.s.pair.peerId;
  }

  refuse(now: number, reason: ReconDrop, detail: string): void {
    this.s.pair.drop(now, reason, `register ${this.s.name}: ${detail}`);
  }

  respond(now: number, m: Message): void {
    this.s.pair.respond(now, m);
  }

  /** Whether the log (and the served base) can bring the follower from `v` to the present (§8.2 pin reuse). */
  canServeFrom(v: number): boolean {
    return this.s.log.covers(v) && v >= this.servedBase && v >= this.s.peerVersion;
  }

  wantWork(now: number): void {
    this.workDueAt = now;
  }

  get maxPayload(): number {
    return this.s.pair.maxPayload;
  }

  touchedKeys(v: number): readonly Uint8Array[] | undefined {
    const rec = this.s.log.get(v);
    return rec && recordKeys(rec);
  }

  /**
   * Whether a diff from `since` is served: the costing chose one for a follower at or below
   * `since` (the follower goes on applying records it already had, and its Status every 16
   * versions, after the one that was costed: a later base is a part of the costed gap, no more
   * work or bytes), and the log still covers it.
   */
  diffFrom(since: number): boolean {
    return this.diffSince !== undefined && since >= this.diffSince && since <= this.s.version && this.s.log.covers(since);
  }

  status(): StatusMsg {
    return this.s.status(Math.max(this.s.log.base, this.servedBase), []);
  }

  /** Whether collapse has work. */
  get hasPending(): boolean {
    return this.pending.length > 0;
  }

  // ---------------------------------------------------------------- own candidates

  queueOwn(seq: number, delta: EntryDelta, stamp: number): void {
    // Decided at the next collapse, normally before anyone is told "pending": nothing to make
    // durable first. One that must wait longer is recorded when it is reported pending (secureOwn).
    this.pending.push({ origin: this.s.pair.localId, seq, delta, stamp });
  }

  restored(added: readonly OwnCandidate[]): void {
    for (const c of added) {
      // Its stamp from the run before (they all come before any new one: stampAbove); one written
      // without (before rev 1.24) predates every stamped one: 0, as the follower counts it.
      this.pending.push({ origin: this.s.pair.localId, seq: c.seq, delta: c.delta, stamp: c.stamp ?? 0 });
      this.secured.add(c.seq); // in the pending list the load kept (and made durable)
    }
  }

  secureOwn(c: OwnCandidate): boolean {
    if (this.secured.has(c.seq)) return false;
    this.secured.add(c.seq);
    this.s.pair.persist({ kind: 'proposed', register: this.s.name, seq: c.seq, delta: c.delta, stamp: c.stamp });
    return true;
  }

  // ---------------------------------------------------------------- restart (before the pair starts)

  /** The rejections a snapshot carried (§10.1). */
  restoreRejections(rejections: ReadonlyMap<number, RejectReason>): void {
    for (const [seq, reason] of [...rejections].sort((a, b) => a[0] - b[0])) this.keepRejection(seq, reason);
    this.trimRejections();
  }

  /** A Collapse record replayed from the store: its rejections of peer candidates, as collapse() recorded them. */
  replayed(entries: readonly CollapseEntry[]): void {
    const peer = this.s.pair.peerId;
    for (const e of entries) if (e.origin === peer && e.verdict === 'rejected') this.keepRejection(e.seq, e.reason);
    this.trimRejections();
  }

  /**
   * Keep a rejection of a peer candidate, in seq order (onStatus and trimRejections stop at the
   * first kept). Every path inserts in order: collapse decides a peer's candidates in seq order,
   * above its mark, and a load takes the snapshot's (sorted) and then the records' after it. A seq
   * below the last kept (none known: a store written otherwise) re-sorts, so order holds anyway.
   */
  private keepRejection(seq: number, reason: RejectReason): void {
    const kept = this.peerRejections;
    const inOrder = kept.size === 0 || seq > this.rejectionsHigh || kept.has(seq);
    kept.set(seq, reason);
    if (inOrder) {
      this.rejectionsHigh = Math.max(kept.size === 1 ? seq : this.rejectionsHigh, seq);
      return;
    }
    const sorted = [...kept].sort((a, b) => a[0] - b[0]);
    kept.clear();
    for (const [q, r] of sorted) kept.set(q, r);
  }

  /**
   * Which of them the follower acknowledged is not durable: its first Status prunes them.
   * Until then keep the highest 2·maxPending: the follower holds at most maxPending own
   * candidates, so the rejections it has not resolved are among the most recent ones.
   */
  private trimRejections(): void {
    const max = 2 * this.s.cfg.maxPending;
    for (const seq of this.peerRejections.keys()) {
      if (this.peerRejections.size <= max) break;
      this.peerRejections.delete(seq);
    }
  }

  // ---------------------------------------------------------------- collapse

  /**
   * Form collapses from the queue (only of candidates stamped before `before`, when another
   * register's cross-register txn needs what arrived here ahead of it decided first). A cross
   * candidate starts a collapse of its own, once the other registers it names have decided what
   * arrived there before it: an append it names at a stream's length then finds the stream as the
   * proposer saw it, whichever register the pair collapses first (§4.6).
   */
  collapse(now: number, before = Infinity): number {
    const s = this.s;
    let made = 0;
    while (this.pending.length > 0 && this.pending.peek()!.stamp < before) {
      const head = this.pending.peek()!;
      if (head.delta.op === DeltaOp.Cross)
        for (const p of head.delta.parts.slice(1)) made += s.pair.sibling(p.register)?.sequencer?.collapse(now, head.stamp) ?? 0;
      const v = s.version + 1;
      const entries: CollapseEntry[] = [];
      let size = 0;
      let taken = 0;
      const quota = new QuotaCheck(s.state, s.cfg.quota);
      for (let i = 0; i < this.pending.length; i++) {
        const c = this.pending.at(i);
        if (c.stamp >= before || (i > 0 && c.delta.op === DeltaOp.Cross)) break;
        // A cross entry grows by the versions the sequencer fills in (at most 8 octets a part).
        const sz =
          varintLen(c.origin) +
          varintLen(c.seq) +
          1 +
          encodedEntryDeltaLen(c.delta) +
          (c.delta.op === DeltaOp.Cross ? 8 * c.delta.parts.length : 0);
        if (entries.length >= MAX_ENTRIES_PER_COLLAPSE || (entries.length > 0 && size + sz > s.pair.maxPayload - COLLAPSE_SLACK)) break;
        entries.push(this.decide(now, c, v, quota));
        s.mark(c.origin, c.seq);
        if (this.secured.size > 0 && c.origin === s.pair.localId) this.secured.delete(c.seq);
        size += sz;
        taken++;
      }
      for (let i = 0; i < taken; i++) this.pending.shift();
      this.seal(now, v, entries);
      made++;
    }
    return made;
  }

  /** Decide one candidate at version `v` against the state the earlier entries of this collapse left. */
  private decide(now: number, c: PairCandidate, v: number, quota: QuotaCheck): CollapseEntry {
    const s = this.s;
    const d = c.delta;
    let reason: RejectReason | 0;
    if (d.op === DeltaOp.Cross) {
      const verdict = decideCross(d, this.target(), quota, v, (name) => this.siblingTarget(name));
      reason = verdict.reason;
      if (reason !== 0 && c.origin === s.pair.localId) s.noteFailedOp(c.seq, reason, verdict.failedOp);
      if (reason === 0) {
        s.state.apply(d.parts[0].delta, v);
        // Every other part becomes its register's next collapse now, before anything else is decided there (§4.6).
        const parts = d.parts.map((p, i) => ({
          register: p.register,
          at: i === 0 ? v : this.s.pair.sibling(p.register)!.sequencer!.commitPart(now, c, s.name, v, p.delta),
          delta: p.delta,
        }));
        return { origin: c.origin, seq: c.seq, verdict: 'committed', delta: { op: DeltaOp.Cross, parts } };
      }
    } else if (d.op === DeltaOp.Part) {
      reason = RejectReason.WrongKind; // never a candidate (the decoder refuses op 7 outside a record)
    } else {
      reason = s.state.check(d);
      if (reason !== 0 && c.origin === s.pair.localId) s.noteFailedOp(c.seq, reason);
      if (reason === 0) reason = quota.admit(d, v);
      if (reason === 0) {
        s.state.apply(d, v);
        return { origin: c.origin, seq: c.seq, verdict: 'committed', delta: d };
      }
    }
    // Kept for §8.5 until the follower acknowledges it (never for one it already has).
    if (c.origin === s.pair.peerId && c.seq > this.peerResolvedSeq) this.keepRejection(c.seq, reason);
    return { origin: c.origin, seq: c.seq, verdict: 'rejected', reason };
  }

  /**
   * Commit a part of a cross-register txn another register's collapse decided, as this
   * register's next collapse, alone (§4.6). Its precondition and quota were checked against
   * this register's committed state in the same turn. Returns the version it commits at.
   */
  commitPart(now: number, c: PairCandidate, anchor: string, anchorVersion: number, delta: Delta): number {
    const s = this.s;
    const v = s.version + 1;
    s.state.apply(delta, v);
    const entry: CollapseEntry = {
      origin: c.origin,
      seq: c.seq,
      verdict: 'committed',
      delta: { op: DeltaOp.Part, anchor, anchorVersion, delta },
    };
    this.seal(now, v, [entry]);
    return v;
  }

  /** Version `v` is decided: encode its record, log and persist it, report it. */
  private seal(now: number, v: number, entries: CollapseEntry[]): void {
    const s = this.s;
    s.version = v;
    const hash = { hi: s.state.hash.hi, lo: s.state.hash.lo };
    const rec = { version: v, hash, encoded: encodeCollapse({ register: s.name, version: v, hash, entries }) };
    this.keepElided(v, hash, entries);
    s.log.append(rec, s.peerVersion);
    s.pair.persist({ kind: 'append', register: s.name, rec });
    s.afterCollapse(now, v, entries);
  }

  /** Make the record's form without the follower's own deltas, if it commits any (elidedForms). */
  private keepElided(v: number, hash: { hi: number; lo: number }, entries: CollapseEntry[]): void {
    const elided = this.elidable(entries);
    if (elided.length === 0) return;
    this.elidedForms.set(v, encodeCollapse({ register: this.s.name, version: v, hash, entries, elided }));
    for (const old of this.elidedForms.keys()) {
      if (old > v - SEND_WINDOW) break;
      this.elidedForms.delete(old);
    }
  }

  /**
   * The committed entries whose delta is the follower's own candidate: not a cross entry (its
   * versions were filled in here, the follower's copy is not the record's), nor a part (numbered
   * in its anchor register: the follower's candidate of that seq here is another).
   */
  private elidable(entries: readonly CollapseEntry[]): number[] {
    const out: number[] = [];
    entries.forEach((e, i) => {
      if (e.verdict === 'committed' && e.origin === this.s.pair.peerId && e.delta.op !== DeltaOp.Cross && e.delta.op !== DeltaOp.Part)
        out.push(i);
    });
    return out;
  }

  private target(): CrossTarget {
    const s = this.s;
    return { name: s.name, state: s.state, version: s.version, quota: s.cfg.quota };
  }

  private siblingTarget(name: string): CrossTarget | undefined {
    const r = this.s.pair.sibling(name);
    if (r === undefined || r.sequencer === undefined) return undefined;
    return { name, state: r.state, version: r.version, quota: r.cfg.quota };
  }

  // ---------------------------------------------------------------- inbound

  handle(now: number, m: RegisterMessage): void {
    switch (m.type) {
      case MsgType.Status:
        return this.onStatus(now, m);
      case MsgType.Propose:
        return this.onPropose(now, m);
      case MsgType.ReconReq:
        return this.responder.onReconReq(now, m);
      case MsgType.SnapReq:
        return this.responder.onSnapReq(now, m);
      case MsgType.StreamReq:
        return this.responder.onStreamReq(now, m);
      default:
        return; // what only a sequencer sends (collapses, reconciliation answers): nothing to do
    }
  }

  private onStatus(now: number, m: StatusMsg): void {
    const s = this.s;
    const first = s.peerVersion < 0;
    this.peerLatestVersion = m.version;
    // A reordered older status says nothing new. (A regression beyond the send window is a follower that lost state.)
    // (A recorded version above our own was never a real one: it is no reference for staleness.) But it may also be a
    // follower that restarted behind what it told us (a diverged record is announced, never logged): the retransmission
    // timer then goes back to what its latest status says, within the log (a reordered one costs at most a resend; rev 1.25).
    if (!first && m.version < s.peerVersion && m.version >= s.peerVersion - SEND_WINDOW && s.peerVersion <= s.version) {
      if (this.retransmitAt === undefined) this.retransmitAt = now + s.pair.rto();
      return;
    }
    const progressed = first || m.version > s.peerVersion;
    // Not stale, yet below what we believed (a follower that lost state, or an earlier status that lied):
    // what we sent past it is not there, so resend from here (else nothing below sentUpTo is sent again).
    const regressed = !first && m.version < s.peerVersion;
    s.peerVersion = m.version;
    s.peerHash = m.hash;
    // After a gap in contact, resend from what the peer holds now rather than wait for the (backed-off) timer.
    if (first || this.goBack || regressed || this.sentUpTo < m.version) this.sentUpTo = m.version;
    this.goBack = false;
    // Selective acknowledgement: versions above a gap arrived, so the gap was lost. Resend it
    // once now (fast retransmit), skipping what the peer holds; a gap that stays waits for the timer.
    this.peerHeld = m.held;
    if (m.held.length > 0 && m.version > this.fastRetransmitAt && this.sentUpTo > m.version) {
      this.fastRetransmitAt = m.version;
      this.sentUpTo = m.version;
    }
    // Only an advance releases rejections, and they are in seq order: the walk stops at the first
    // kept, so a Status costs what it releases (rev 1.34; each Status walked them all, ~23x a datagram).
    if (m.resolvedSeq > this.peerResolvedSeq) {
      this.peerResolvedSeq = m.resolvedSeq;
      for (const q of this.peerRejections.keys()) {
        if (q > m.resolvedSeq) break;
        this.peerRejections.delete(q);
      }
    }
    for (const v of this.elidedSent.keys()) if (v <= m.version) this.elidedSent.delete(v);
    for (const v of this.elidedForms.keys()) {
      if (v > m.version) break; // in version order
      this.elidedForms.delete(v);
    }
    const mine = s.log.hashAt(m.version);
    const coherent = s.pair.state === PairState.ENTANGLED || s.pair.state === PairState.COLLAPSING;
    if (coherent) this.gapScan = undefined;
    if (m.version > s.version || (mine !== undefined && !hashEquals(mine, m.hash))) {
      if (coherent) s.pair.trigger(now, LifecycleEvent.HashMismatch, `register ${s.name}: peer at v${m.version} h=${hashHex(m.hash)}`);
      return;
    }
    if (mine !== undefined) {
      // The peer holds everything up to m.version: history before it is no longer needed (compaction at acknowledgement).
      s.log.compactThrough(m.version);
      this.responder.release(m.version);
    } else if (coherent) {
      s.pair.trigger(now, LifecycleEvent.UnfillableGap, `register ${s.name}: peer at v${m.version}, log starts after v${s.log.base}`);
    }
    if (m.version >= s.version) this.retransmitAt = undefined;
    else if (progressed) this.retransmitAt = now + s.pair.rto();
    // While re-entangling the follower waits on our status to finish; keep it current.
    if (progressed && !coherent) s.statusDirty = true;
    if (!coherent && !this.gapCosted) this.costGap(m.version);
    if (this.servedBase > 0 && m.version >= this.servedBase) this.servedBase = 0;
  }

  private onPropose(now: number, m: ProposeMsg): void {
    const s = this.s;
    const peerId = s.pair.peerId;
    let refused = 0;
    // `base` may skip the numbers a follower lost in a restart (at most a lease and its
    // pending candidates); a larger jump would make every later honest candidate a "duplicate".
    const mark = s.origins.get(peerId) ?? 0;
    if (m.base - 1 > Math.max(mark, this.peerPendingHigh) + s.cfg.maxPending + 4 * SEQ_LEASE) {
      s.pair.drop(
        now,
        'beyond-window',
        `register ${s.name}: Propose base ${m.base} far above the peer's mark ${mark}`,
        m.candidates.length,
      );
      return;
    }
    this.takeEarly(); // held ones a full receive window left behind
    for (let i = 0; i < m.candidates.length; i++) {
      const c = m.candidates[i];
      if (c.origin !== peerId) {
        refused++;
        continue;
      }
      // Each origin's candidates are taken in sequence order; below the proposer's base nothing more will come.
      const expected = Math.max(s.origins.get(c.origin) ?? 0, this.peerPendingHigh, m.base - 1) + 1;
      if (c.seq < expected) continue; // a duplicate
      if (c.seq > expected) {
        this.holdEarly(c, expected); // past a gap: kept (within bounds) until the gap fills
        continue;
      }
      if (!this.windowOpen()) {
        const left = m.candidates.length - i;
        s.pair.drop(now, 'beyond-window', `register ${s.name}: ${left} candidate(s) past the receive window`, left);
        break;
      }
      this.take(c);
      this.takeEarly();
    }
    if (refused > 0) s.pair.drop(now, 'wrong-origin', `${refused} candidate(s) not from the peer's own origin`, refused);
  }

  /** Whether the receive window (§7.2) takes another peer candidate. */
  private windowOpen(): boolean {
    // An honest follower holds at most maxPending candidates, so it never fills the queue nor
    // leaves 2·maxPending rejections unacknowledged. Past that nothing is kept: counted, and the
    // peer retransmits once there is room. (So the rejections held stay under 4·maxPending:
    // 2·maxPending held, plus a full queue rejected.)
    const max = 2 * this.s.cfg.maxPending;
    return this.pending.length < max && this.peerRejections.size < max;
  }

  /** Queue the peer's next candidate in sequence (`copy`: its delta still points into the datagram). */
  private take(c: PairCandidate, copy = true): void {
    const delta = copy ? copyEntryDelta(c.delta) : c.delta;
    this.pending.push({ origin: c.origin, seq: c.seq, delta, stamp: this.s.pair.stamp() });
    if (c.seq > this.peerPendingHigh + 1) this.dropEarlyUpTo(c.seq); // a skip below a base passed them
    this.peerPendingHigh = c.seq;
  }

  /** The index of the first held early candidate numbered `seq` or above (binary search: `early` is in seq order). */
  private earlyIndex(seq: number): number {
    let lo = 0;
    let hi = this.early.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (this.early[mid].seq < seq) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  }

  /**
   * Keep a peer candidate that arrived past a gap. Within maxPending of the next expected seq
   * (an honest follower's undecided candidates), at most maxPending of them and earlyByteLimit
   * octets: past that, held ones above it make room (the lower ones fill the gap sooner), or it
   * is ignored as before (the follower resends it on its timer). O(log n) and a short memmove.
   */
  private holdEarly(c: PairCandidate, expected: number): void {
    const s = this.s;
    const max = s.cfg.maxPending;
    if (c.seq - expected >= max) return;
    const i = this.earlyIndex(c.seq);
    if (this.early[i]?.seq === c.seq) return; // held already (a duplicate)
    const cost = earlyCost(c);
    const limit = earlyByteLimit((s.cfg.holdQuota ?? s.cfg.quota).maxValueBytes);
    while (this.early.length >= max || this.earlyBytes + cost > limit) {
      if (this.early.length <= i) return; // nothing above it to make room
      this.earlyBytes -= earlyCost(this.early.pop()!);
    }
    this.early.splice(i, 0, { origin: c.origin, seq: c.seq, delta: copyEntryDelta(c.delta) });
    this.earlyBytes += cost;
  }

  /** Queue the held candidates that now follow in sequence (the gap before them filled), while the window is open. */
  private takeEarly(): void {
    this.dropEarlyUpTo(Math.max(this.s.origins.get(this.s.pair.peerId) ?? 0, this.peerPendingHigh));
    let n = 0;
    for (; n < this.early.length && this.early[n].seq === this.peerPendingHigh + 1 && this.windowOpen(); n++) {
      this.earlyBytes -= earlyCost(this.early[n]);
      this.take(this.early[n], false);
    }
    if (n > 0) this.early.splice(0, n);
  }

  /** Forget held candidates numbered `seq` or below (taken, decided, or skipped below a later base). */
  private dropEarlyUpTo(seq: number): void {
    let n = 0;
    while (n < this.early.length && this.early[n].seq <= seq) this.earlyBytes -= earlyCost(this.early[n++]);
    if (n > 0) this.early.splice(0, n);
  }

  /** Peer candidates held past a gap (count and octets): bounded by maxPending and earlyByteLimit. */
  get earlyHeld(): { count: number; bytes: number } {
    return { count: this.early.length, bytes: this.earlyBytes };
  }

  // ---------------------------------------------------------------- re-entanglement

  beginReentangle(): void {
    this.s.reentangleTarget = this.s.version;
    this.goBack = true;
    this.gapCosted = false;
  }

  /**
   * Re-entanglement by log replays every missed collapse; a log diff sends each key the gap
   * touched once (§8.2.1); range reconciliation each differing key once plus tree summaries.
   * When the missed collapses rewrote keys, the replay costs more: then advertise the gap as
   * unservable (Status.logBase) so the follower reconciles, asking for the diff first, which
   * is served when it was the cheapest (diffFrom). Costed once per re-entanglement, with at most
   * GAP_COSTING_MAX records read; streams always replay (a stream's gap is its tail).
   *
   * A follower can start a re-entanglement with every other datagram (Close{GoingAway}, then a
   * Status), so the costing must not be a fresh walk of the gap each time. What it reads is a pure
   * function of the follower's version, our version, the log's records between them, the state's
   * size and octets, and the payload size; of these only the records cost more than O(1) to read,
   * and records are immutable once logged. So the keys the records write are kept between
   * costings (GapScan) and only records logged since the last costing are decoded: the same
   * numbers as a fresh scan, so the same path chosen, at O(GAP_COSTING_MAX) integer additions a
   * costing plus each record decoded about once. (The log is compacted through the follower's
   * version before the costing, onStatus, so the gap's octets are the log's.)
   */
  private costGap(peerVersion: number): void {
    const s = this.s;
    this.gapCosted = true;
    this.diffSince = undefined;
    const gap = s.version - peerVersion;
    if (!(s.state instanceof MapState) || gap <= 0 || !s.log.covers(peerVersion)) return;
    let logBytes = 0;
    if (s.log.base === peerVersion && s.log.last === s.version) logBytes = s.log.sizeBytes;
    else for (let v = peerVersion + 1; v <= s.version; v++) logBytes += s.log.get(v)!.encoded.length;
    if (logBytes < GAP_COSTING_MIN_BYTES) return;
    // A follower can force a re-entanglement with one Status: read at most GAP_COSTING_MAX
    // records (the most recent) and extrapolate the distinct keys from them (an upper bound).
    const scanFrom = Math.max(peerVersion + 1, s.version - GAP_COSTING_MAX + 1);
    // A run not of this log, or that began after scanFrom or too long ago (at most one rebuild
    // per GAP_COSTING_MAX records logged), is read again from scanFrom.
    if (this.gapScan === undefined || !this.gapScan.fits(s.log, scanFrom, s.version)) this.gapScan = new GapScan(scanFrom);
    this.gapRecordsDecoded += this.gapScan.extend(s.log, s.version);
    const { keys, entries, written: writtenBytes } = this.gapScan.scan(scanFrom);
    const n = s.state.size();
    const distinct = Math.min(n + entries * (gap / (s.version - scanFrom + 1)), Math.ceil((keys * gap) / (s.version - scanFrom + 1)));
    const avgEntry = n > 0 ? s.state.fullTransferBytes() / n : 64;
    // Reconciliation: the differing keys' entries, plus tree summaries: about a path per key
    // when differences are sparse, at most the whole tree (one 16-child node per ~8 entries).
    const treeBytes = Math.min(distinct * RECONCILE_OVERHEAD_PER_KEY, (n / 8 + 1) * RECON_NODE_BYTES);
    const reconcileBytes = distinct * avgEntry + treeBytes;
    // A diff: each touched key once, with the last value the gap wrote (sized as the gap's writes
    // are, plus a key length, a version delta and a value length), in parts that each fill a payload.
    const diffEntry = entries > 0 ? writtenBytes / entries + 3 : avgEntry;
    const diffBytes = distinct * diffEntry * (1 + DIFF_PART_OVERHEAD / s.pair.maxPayload) + DIFF_FIXED_BYTES;
    // The replay's records fill payloads too: the same framing per payload.
    const replayBytes = logBytes * (1 + DIFF_PART_OVERHEAD / s.pair.maxPayload);
    if (diffBytes * DIFF_MARGIN < replayBytes && diffBytes <= reconcileBytes) this.diffSince = peerVersion;
    else if (!(reconcileBytes * 2 < logBytes)) return;
    this.servedBase = s.version;
    s.statusDirty = true;
  }

  aligned(): boolean {
    const s = this.s;
    if (s.peerHash === undefined || s.peerVersion < (s.reentangleTarget ?? s.version)) return false;
    const mine = s.log.hashAt(s.peerVersion);
    return mine !== undefined && hashEquals(mine, s.peerHash);
  }

  settled(): boolean {
    return this.pending.length === 0 && this.s.peerVersion === this.s.version;
  }

  idle(): boolean {
    const s = this.s;
    return (
      this.pending.length === 0 &&
      s.peerVersion === s.version &&
      this.sentUpTo >= s.version &&
      this.retransmitAt === undefined &&
      this.workDueAt === undefined
    );
  }

  // ---------------------------------------------------------------- timers and sending

  deadlines(): Partial<Record<SequencerTimer, number>> {
    const t: Partial<Record<SequencerTimer, number>> = {};
    if (this.workDueAt !== undefined) t['recon-work'] = this.workDueAt;
    if (this.retransmitAt !== undefined) t.retransmit = this.retransmitAt;
    return t;
  }

  handleTimeout(now: number): boolean {
    let retransmitted = false;
    for (const timer of SEQUENCER_TIMERS) if (this.fire(now, timer)) retransmitted = true;
    return retransmitted;
  }

  /** Fire `timer` if it is due; true if it was a retransmission. */
  private fire(now: number, timer: SequencerTimer): boolean {
    switch (timer) {
      case 'recon-work':
        if (this.workDueAt === undefined || now < this.workDueAt) return false;
        this.workDueAt = undefined;
        this.responder.work(now);
        return false;
      case 'retransmit':
        if (this.retransmitAt === undefined || now < this.retransmitAt) return false;
        this.retransmitAt = undefined;
        this.s.statusDirty = true;
        // A follower whose accepted status is below the log's base holds nothing the log follows (§8.1): it reconciles
        // from our status, and its next status sets the send point. Going back to the base (rev 1.25-1.27) resent it the
        // log's tail every RTO, records it could not apply, large ones in fragments whose pieces kept deferring its
        // reconciliation request (rev 1.28). New records still go as they commit.
        if (this.s.peerVersion < this.s.log.base) return false;
        // Go back to what the peer last said it holds (even if that status looked stale) and resend from there, but
        // not below the log's base: compacted at an acknowledgement, what is below it the follower holds (a stale
        // status there would stop sending altogether, fill finding no record), or, if it restarted behind it, learns
        // from our status (unfillable gap) and reconciles.
        this.sentUpTo = Math.max(Math.min(this.s.peerVersion, this.peerLatestVersion), this.s.log.base, 0);
        return true;
      default: {
        const _unhandled: never = timer; // a timer added to SEQUENCER_TIMERS needs its case here
        return _unhandled;
      }
    }
  }

  startsSession(): boolean {
    return false; // the sequencer answers sessions
  }

  fill(now: number, b: PayloadBuilder): void {
    const s = this.s;
    if (s.peerVersion < 0) return;
    if (s.peerVersion < this.servedBase) return; // the follower reconciles past this gap instead
    const limit = Math.min(s.version, s.peerVersion + SEND_WINDOW);
    while (this.sentUpTo < limit) {
      if (this.peerHolds(this.sentUpTo + 1)) {
        this.sentUpTo++;
        continue;
      }
      const rec = s.log.get(this.sentUpTo + 1);
      if (!rec) return; // compacted: the follower sees the gap in our status and reconciles
      const small = this.elide(rec);
      if (small) {
        if (!b.add(small)) return;
        // Counted only when the follower waits for this very record (while an earlier one is
        // still under way, a resend says nothing of whether it could restore this one), and once
        // per RTO (the go-backs of one loss, fast retransmit and timer, are one attempt).
        const tried = this.elidedSent.get(rec.version) ?? { n: 0, at: -Infinity };
        if (s.peerVersion === rec.version - 1 && now - tried.at >= s.pair.rto())
          this.elidedSent.set(rec.version, { n: tried.n + 1, at: now });
        else if (!this.elidedSent.has(rec.version)) this.elidedSent.set(rec.version, tried);
        this.sentUpTo++;
        if (this.retransmitAt === undefined) this.retransmitAt = now + s.pair.rto();
        continue;
      }
      // A record larger than a payload (one large delta) is fragmented, named by its version.
      if (!b.add(rec.encoded, `collapse/${s.name}/${rec.version}`)) return;
      this.sentUpTo++;
      if (this.retransmitAt === undefined) this.retransmitAt = now + s.pair.rto();
    }
  }

  /**
   * A record that commits the follower's own candidate(s): the same record with their deltas
   * left out (the follower holds them), if that fits a payload and was not sent so ELIDED_TRIES
   * times already (§3.6.4). A follower's write then crosses the network once.
   */
  private elide(rec: LogRecord): Uint8Array | undefined {
    const s = this.s;
    const tried = this.elidedSent.get(rec.version);
    if ((tried?.n ?? 0) >= ELIDED_TRIES) return undefined;
    // Every Status walks elidedSent: it holds what an honest follower leaves unacknowledged, about a
    // send window. Past twice that (a follower reporting versions going down, the log's large
    // records each sent shortened and counted: 5,888 in the test) a record goes whole.
    if (tried === undefined && this.elidedSent.size >= 2 * SEND_WINDOW) return undefined;
    let raw = this.elidedForms.get(rec.version);
    if (raw === undefined && rec.encoded.length > s.pair.maxPayload) {
      // Replayed after a restart (no form kept): a large record is still worth shortening.
      const m = decodeMessages(rec.encoded).messages[0] as CollapseMsg;
      const elided = this.elidable(m.entries);
      // Named field by field: a record of short sets decodes with its entries behind an accessor,
      // which a spread leaves out (the encoder then threw out of pollTransmit).
      if (elided.length > 0) raw = encodeCollapse({ register: m.register, version: m.version, hash: m.hash, entries: m.entries, elided });
    }
    return raw !== undefined && raw.length <= s.pair.maxPayload ? raw : undefined;
  }

  private peerHolds(v: number): boolean {
    for (const r of this.peerHeld) if (v >= r.from && v <= r.to) return true;
    return false;
  }
}
