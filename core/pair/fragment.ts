/**
 * Fragmentation of messages larger than a payload (docs/PROTOCOL.md §3.4): a large Propose,
 * Collapse, ReconEntries or SnapChunk (one large delta or entry) travels as Fragment messages
 * and is reassembled before its register sees it, so the registers keep their message-level
 * protocol. Reliability is per fragment, as QUIC's is per packet (RFC 9002): the receiver
 * acknowledges the fragments it holds as ranges (FragmentAck); the sender declares a fragment
 * lost when one sent 3 later was acknowledged (kPacketThreshold) or when it stays
 * unacknowledged for an RTO, and resends only that one. A window bounds the fragments in
 * flight, so one large value does not flood the socket; the registers' own messages go first
 * in every datagram, so it does not starve them either.
 *
 * Every bound on the receiving side is charged to the peer: the bytes of partial messages
 * stay within a quota (stale ones are evicted for a new one), the partial messages within a
 * count; anything past them, or contradicting what arrived, is dropped and counted, never thrown.
 */
import {
  MAX_FRAGMENT_ACK_RANGES,
  MsgType,
  fragmentLen,
  type FragmentAckMsg,
  type FragmentMsg,
  type IndexRange,
} from '../../wire/messages.js';
import type { PairDrop } from './drops.js';

/** Fragments in flight (sent, neither acknowledged nor declared lost), all messages together. */
export const FRAGMENT_WINDOW = 64;
/** RFC 9002 §6.1.1 kPacketThreshold: a fragment is lost once one sent this many later is acknowledged. */
const PACKET_THRESHOLD = 3;
/** Own messages queued or in flight as fragments at once (the registers hold the rest); their bytes are bounded too (`byteLimit`). */
const OUT_LIMIT = 32;
/** Fragments declared lost remembered until sent again, for a late acknowledgement (a forgotten one is merely resent). */
const LOST_MEMORY = FRAGMENT_WINDOW;
/** Delivered keys remembered (each a few dozen bytes). */
const DELIVERED_MEMORY = 256;
/** Partial messages a receiver holds at once. */
const MAX_PARTIALS = 64;
/** Completed message ids remembered, to acknowledge a duplicate fragment whole. */
const DONE_MEMORY = 256;
/** A fragment's framing in a payload: type, length and the four varints (5 bytes each at most), the bytes' length. */
export const FRAGMENT_OVERHEAD = 1 + 3 + 4 * 5 + 3;
/** Room kept beside a fragment for an Ack and a FragmentAck in the same payload. */
const ACK_ROOM = 40;
/** After this many fragments of a message, its acknowledgement leaves at once (RFC 9000 §13.2.2 acks every 2nd; fewer here). */
export const ACK_EVERY = 8;
/**
 * Disjoint ranges of pieces one partial message holds at most (§3.7.4): an honest sender sends
 * its pieces in order and leaves at most a window (64) of holes; a piece that would open one
 * more range is dropped (`fragment-quota`) and sent again later. Bounds both the bookkeeping a
 * peer scattering pieces makes us hold and the work per piece (a search and a move of at most this many).
 */
export const MAX_HELD_RANGES = 256;
/** What a partial message holds besides its bytes: its ranges (8 bytes each) and its record. */
export const PARTIAL_BOOKKEEPING = 8 * MAX_HELD_RANGES + 512;
/**
 * What a partial message of `total` bytes is charged against the reassembly quota, and so what
 * a sender counts for each message it keeps under way (the peer can hold all of them at once).
 */
export const reassemblyCharge = (total: number): number => total + PARTIAL_BOOKKEEPING;

interface OutMessage {
  id: number;
  key: string | undefined;
  /** Its key without the last part (one register's proposals, or collapses, or one request's answer): sent in order, other streams in turn. */
  stream: string;
  /** Remember its key once delivered (a resend is then moot for a while). */
  remember: boolean;
  raw: Uint8Array;
  count: number;
  /** Per fragment: 0 unsent (or lost, to send again), 1 in flight, 2 acknowledged. */
  state: Uint8Array;
  /** Send order number and time of each fragment's last transmission. */
  order: Float64Array;
  sentAt: Float64Array;
  /** Per fragment: 1 once sent more than once (Karn's rule: its acknowledgement is no RTT sample). */
  resent: Uint8Array;
  acked: number;
  /** Lowest index that may still need sending (an optimisation of the scan). */
  next: number;
  /** When its first fragment left (undefined: not yet). */
  startedAt: number | undefined;
}

export interface FragmentSenderStats {
  fragmentsSent: number;
  fragmentsResent: number;
  messagesFragmented: number;
  /** Times the receiver was found to have forgotten a message under way (its acknowledged pieces sent again). */
  messagesForgotten: number;
}

/** The sending half: cuts own large messages into fragments and resends what is lost. */
export class FragmentSender {
  private readonly out: OutMessage[] = [];
  /** Bytes of the messages in `out`, as the peer's reassembly quota counts them. */
  private outBytes = 0;
  private nextId = 1;
  private sendOrder = 0;
  /** When each stream with queued messages was last served (a count of fragments sent), for round-robin. */
  private readonly turns = new Map<string, number>();
  private turn = 0;
  private largestAckedOrder = -1;
  /** In-flight fragments as (message, index), for loss detection over at most the window. */
  private readonly inFlight: { m: OutMessage; i: number }[] = [];
  /** Fragments declared lost and not sent again yet (a late acknowledgement spares their resend); at most LOST_MEMORY. */
  private readonly lost: { m: OutMessage; i: number }[] = [];
  /**
   * Keys of messages the peer acknowledged whole, until when a register's retransmission of
   * them is taken as done: the peer's answer to a large message (the Collapse of a large
   * Propose) is itself large and takes about as long to arrive as the message took to send.
   */
  private readonly delivered = new Map<string, number>();
  readonly stats: FragmentSenderStats = { fragmentsSent: 0, fragmentsResent: 0, messagesFragmented: 0, messagesForgotten: 0 };
  /**
   * When a fragment was last newly acknowledged, or a message queued while none was: a sender
   * with messages and no progress for long is stuck (the peer forgot them).
   */
  lastProgressAt = 0;
  /** The round trip of the newest fragment the last acknowledgement covered first (an RTT sample for a caller without its own estimator), or undefined. */
  rttSample: number | undefined;
  /**
   * Bytes of own messages queued or in flight at most (one message is always taken, however
   * large): each is an encoded copy held until acknowledged whole, and sending more than the
   * peer can reassemble at once would only have its pieces dropped. Raised when a register's maxValueBytes is (a reload).
   */
  byteLimit: number;
  /** Own messages queued or in flight at once. */
  private readonly outLimit: number;

  /**
   * `maxPayload`: a Fragment and an Ack fit an empty payload. `firstId`: the first message id
   * (a QN link has no session to reset, so a restarted sender starts elsewhere).
   */
  constructor(
    private readonly maxPayload: number,
    opts: { byteLimit?: number; outLimit?: number; firstId?: number } = {},
  ) {
    this.byteLimit = opts.byteLimit ?? Infinity;
    this.outLimit = opts.outLimit ?? OUT_LIMIT;
    this.nextId = opts.firstId ?? 1;
  }

  private get fragBytes(): number {
    return this.maxPayload - FRAGMENT_OVERHEAD - ACK_ROOM;
  }

  /**
   * Take an own message for fragmentation. `key` names it for its register (a collapse's
   * version, a candidate's seq): the same key while one is queued is the same message, not a
   * second copy (the registers retransmit whole messages on their own timers). False: full,
   * try later. `remember` false: the key holds only while the message is under way (a
   * receiver that may discard a delivered message, as a Raft follower does an out-of-order
   * snapshot chunk, needs the resend).
   */
  add(now: number, raw: Uint8Array, key: string | undefined, remember = true): boolean {
    if (key !== undefined && this.holds(now, key)) return true;
    if (!this.canTake(raw.length)) return false;
    if (this.out.length === 0) this.lastProgressAt = now;
    this.outBytes += reassemblyCharge(raw.length);
    const count = Math.ceil(raw.length / this.fragBytes);
    const id = this.nextId++;
    this.out.push({
      id,
      key,
      stream: key === undefined ? `#${id}` : key.slice(0, key.lastIndexOf('/')),
      remember,
      raw,
      count,
      state: new Uint8Array(count),
      order: new Float64Array(count),
      sentAt: new Float64Array(count),
      resent: new Uint8Array(count),
      acked: 0,
      next: 0,
      startedAt: undefined,
    });
    this.stats.messagesFragmented++;
    return true;
  }

  /**
   * Whether `add` would take a message of `bytes` now (within OUT_LIMIT messages and
   * `byteLimit` bytes as the peer's reassembly quota counts them, `reassemblyCharge`): asked
   * before encoding one, so a full queue costs no encoding.
   */
  canTake(bytes: number): boolean {
    return this.out.length === 0 || (this.out.length < this.outLimit && this.outBytes + reassemblyCharge(bytes) <= this.byteLimit);
  }

  /** Whether the message named `key` is queued, in flight, or was delivered recently enough that a register's retransmission of it is moot. */
  holds(now: number, key: string): boolean {
    if (this.out.some((m) => m.key === key)) return true;
    const until = this.delivered.get(key);
    if (until !== undefined && now < until) return true;
    this.delivered.delete(key);
    return false;
  }

  /** Messages queued or in flight. */
  get pending(): number {
    return this.out.length;
  }

  /** Bytes of the messages queued or in flight, as the peer's reassembly quota counts them (`reassemblyCharge`). */
  get bytes(): number {
    return this.outBytes;
  }

  /**
   * The next fragment to send if the window has room and it fits `room`, marked in flight;
   * undefined otherwise. Streams take turns (round-robin: the one served least recently), so a
   * small message of one register does not wait for every piece of a large one of another;
   * within a stream, its first message with a piece to send (a register's messages arrive in
   * its order, which its peer needs: a Propose past a gap is dropped).
   */
  next(now: number, room: number): FragmentMsg | undefined {
    if (this.out.length === 0 || this.inFlight.length >= FRAGMENT_WINDOW) return undefined;
    let pick: OutMessage | undefined;
    let pickTurn = Infinity;
    const seen = new Set<string>();
    for (const m of this.out) {
      if (seen.has(m.stream)) continue;
      while (m.next < m.count && m.state[m.next] !== 0) m.next++;
      if (m.next >= m.count) continue;
      seen.add(m.stream);
      const turn = this.turns.get(m.stream) ?? -1;
      if (turn < pickTurn) {
        pick = m;
        pickTurn = turn;
      }
    }
    if (pick !== undefined) {
      const m = pick;
      const i = m.next;
      const f = Math.ceil(m.raw.length / m.count);
      const bytes = m.raw.subarray(i * f, i * f + fragmentLen(m.raw.length, m.count, i));
      if (bytes.length + FRAGMENT_OVERHEAD > room) return undefined;
      if (m.order[i] !== 0 || m.sentAt[i] !== 0) {
        this.stats.fragmentsResent++;
        m.resent[i] = 1;
      }
      m.state[i] = 1;
      m.startedAt ??= now;
      m.order[i] = ++this.sendOrder;
      m.sentAt[i] = now;
      this.inFlight.push({ m, i });
      this.stats.fragmentsSent++;
      this.turns.set(m.stream, ++this.turn);
      return { type: MsgType.Fragment, msgId: m.id, total: m.raw.length, index: i, count: m.count, bytes };
    }
    return undefined;
  }

  /**
   * The peer's acknowledgement (hostile: unknown ids and indexes are ignored). `lossDelay`:
   * how long a fragment overtaken by an acknowledged one may still be merely reordered
   * (RFC 9002 §6.1.2 kTimeThreshold, 9/8 of the RTT).
   */
  onAck(now: number, a: FragmentAckMsg, lossDelay: number, rto: number): void {
    // Cleared first: an acknowledgement of a message no longer held (a repeat) is no sample either.
    this.rttSample = undefined;
    const m = this.out.find((o) => o.id === a.msgId);
    if (!m) return;
    // Piece 0 acknowledged before and not held now: the receiver forgot the message (a session
    // switch of its own after ours, crossed handshakes §12.6, reset its reassembly; or it evicted
    // it). Before, the pieces it had acknowledged were never sent again, the rest were, and the
    // message counted as delivered whole though it never completed: it waited for its register's
    // retransmission. The acknowledged pieces it does not list are sent again, under the same id.
    if (m.state[0] === 2 && !covers(a.ranges, 0)) this.forgotten(m, a.ranges);
    // Only a fragment sent and not acknowledged yet can be acknowledged now: the ones in flight
    // and the ones declared lost but not sent again. Those are read (at most the window and
    // LOST_MEMORY), never the ranges' span, which a peer that withholds one piece makes the whole message.
    let newest = -1;
    for (const { m: o, i } of this.inFlight) {
      if (o !== m || m.state[i] !== 1 || !covers(a.ranges, i)) continue;
      if (m.order[i] > newest && m.resent[i] === 0) {
        newest = m.order[i];
        this.rttSample = now - m.sentAt[i];
      }
      this.largestAckedOrder = Math.max(this.largestAckedOrder, m.order[i]);
      m.state[i] = 2;
      m.acked++;
      this.lastProgressAt = now;
    }
    for (let k = this.lost.length - 1; k >= 0; k--) {
      const { m: o, i } = this.lost[k];
      if (o.state[i] !== 0)
        this.lost.splice(k, 1); // sent again since
      else if (o === m && covers(a.ranges, i)) {
        m.state[i] = 2;
        m.acked++;
        this.lastProgressAt = now;
        this.lost.splice(k, 1);
      }
    }
    if (m.acked === m.count) {
      this.out.splice(this.out.indexOf(m), 1);
      this.outBytes -= reassemblyCharge(m.raw.length);
      if (!this.out.some((o) => o.stream === m.stream)) this.turns.delete(m.stream);
      if (m.key !== undefined && m.remember) {
        this.delivered.set(m.key, now + 2 * (now - (m.startedAt ?? now)) + rto);
        if (this.delivered.size > DELIVERED_MEMORY) this.delivered.delete(this.delivered.keys().next().value!);
      }
    }
    this.detectLost(now, Infinity, lossDelay);
  }

  /**
   * The receiver forgot message `m` (`ranges`: what it holds now): its acknowledged pieces outside
   * them are unsent again. Only the gaps between the ranges are read, and the part above them only
   * when the ranges are all it holds (fewer than MAX_FRAGMENT_ACK_RANGES); piece 0 is among them,
   * so the next time needs it sent and acknowledged again.
   */
  private forgotten(m: OutMessage, ranges: readonly IndexRange[]): void {
    const end = ranges.length >= MAX_FRAGMENT_ACK_RANGES ? ranges[ranges.length - 1].to + 1 : m.count;
    let from = 0;
    for (let k = 0; k <= ranges.length && from < end; k++) {
      const to = Math.min(k < ranges.length ? ranges[k].from : end, end);
      for (let i = from; i < to; i++) {
        if (m.state[i] !== 2) continue;
        m.state[i] = 0;
        m.acked--;
        if (i < m.next) m.next = i;
      }
      if (k < ranges.length) from = Math.max(from, ranges[k].to + 1);
    }
    this.stats.messagesForgotten++;
  }

  /**
   * Declare lost (to send again) what stayed unacknowledged for `rto`, and what acknowledged
   * fragments sent PACKET_THRESHOLD later overtook, once it is `lossDelay` old (both of RFC
   * 9002 §6.1's thresholds at once: reordering is common on the paths a large value crosses,
   * and a spurious resend costs a whole fragment). True if a fragment was lost by the timer.
   */
  detectLost(now: number, rto: number, lossDelay = Infinity): boolean {
    let timedOut = false;
    for (let k = this.inFlight.length - 1; k >= 0; k--) {
      const { m, i } = this.inFlight[k];
      if (m.state[i] !== 1) {
        this.inFlight.splice(k, 1);
        continue;
      }
      const overtaken = m.order[i] + PACKET_THRESHOLD <= this.largestAckedOrder && now >= m.sentAt[i] + lossDelay;
      const expired = now >= m.sentAt[i] + rto;
      if (overtaken || expired) {
        m.state[i] = 0;
        if (i < m.next) m.next = i;
        this.inFlight.splice(k, 1);
        this.lost.push({ m, i });
        if (this.lost.length > LOST_MEMORY) this.lost.shift();
        if (!overtaken) timedOut = true;
      }
    }
    return timedOut;
  }

  /** When the oldest fragment in flight times out. */
  deadline(rto: number): number | undefined {
    let t: number | undefined;
    for (const { m, i } of this.inFlight) if (m.state[i] === 1 && (t === undefined || m.sentAt[i] + rto < t)) t = m.sentAt[i] + rto;
    return t;
  }

  /** A new session (the peer may have restarted and forgotten every partial message): send everything unacknowledged again, under new ids. */
  /**
   * Drop own messages whose key `stale` names (a QN member no longer leading drops its appends
   * and snapshot chunks: their pieces would count as the old leader's contact at the followers).
   */
  forget(stale: (key: string) => boolean): void {
    const gone = new Set<OutMessage>();
    for (let k = this.out.length - 1; k >= 0; k--) {
      const m = this.out[k];
      if (m.key === undefined || !stale(m.key)) continue;
      gone.add(m);
      this.out.splice(k, 1);
      this.outBytes -= reassemblyCharge(m.raw.length);
    }
    if (gone.size === 0) return;
    for (let k = this.inFlight.length - 1; k >= 0; k--) if (gone.has(this.inFlight[k].m)) this.inFlight.splice(k, 1);
    for (let k = this.lost.length - 1; k >= 0; k--) if (gone.has(this.lost[k].m)) this.lost.splice(k, 1);
    for (const m of gone) if (!this.out.some((o) => o.stream === m.stream)) this.turns.delete(m.stream);
  }

  reset(): void {
    for (const m of this.out) {
      m.id = this.nextId++;
      m.state.fill(0);
      m.acked = 0;
      m.next = 0;
      m.startedAt = undefined;
    }
    this.delivered.clear();
    this.inFlight.length = 0;
    this.lost.length = 0;
    this.largestAckedOrder = -1;
  }
}

interface Partial {
  total: number;
  count: number;
  buf: Uint8Array;
  have: number;
  lastAt: number;
  /** Fragments received since its last acknowledgement. */
  unacked: number;
  /**
   * The pieces held as ascending disjoint ranges, kept as pieces arrive (an acknowledgement
   * reads the first few, never every piece): range k is `held[2k] … held[2k+1]`, `ranges` of
   * them, at most MAX_HELD_RANGES; the array grows by doubling. Also what says whether a piece
   * is held (a binary search): before, a byte per piece and an object per range were kept, which
   * a peer sending 1-byte pieces, every other one, made 24 times what the quota counted.
   */
  held: Uint32Array;
  ranges: number;
}

export type FragmentDrop = Extract<PairDrop, 'fragment-quota' | 'fragment-conflict' | 'fragment-duplicate'>;

/** The receiving half: reassembles the peer's fragments within a quota and acknowledges them. */
export class Reassembler {
  private readonly partials = new Map<number, Partial>();
  /** Completed ids with their count, oldest first (insertion order), at most DONE_MEMORY. */
  private readonly done = new Map<number, { total: number; count: number }>();
  private readonly dirty = new Set<number>();
  private heldBytes = 0;
  /**
   * Charges of partial messages discarded for a conflict, still counted in `heldBytes` until
   * `debtUntil` (staleMs after the latest conflict), as if they were held and fell silent then.
   * Freed at once, they let a peer alternate two tiny contradicting pieces of one id and have a
   * buffer of nearly the whole quota allocated for every other piece (~150 ms per datagram).
   */
  private debt = 0;
  private debtUntil = 0;
  /** New pieces taken so far (progress the peer makes delivering). */
  accepted = 0;
  /** Whether an acknowledgement is owed at once (ACK_EVERY fragments of one message since its last). */
  urgent = false;

  constructor(
    /** Bytes of partial messages held at most (the peer's quota); raised when a register's maxValueBytes is (a reload). */
    public quota: number,
    /** A partial message silent this long may be evicted for a new one. */
    private readonly staleMs: number,
    private readonly drop: (reason: FragmentDrop, detail: string) => void,
  ) {}

  /** Bytes held by partial messages, their bookkeeping included (`reassemblyCharge`; never above the quota). */
  get bytes(): number {
    return this.heldBytes;
  }

  get partialCount(): number {
    return this.partials.size;
  }

  /** Ranges of pieces held, all partial messages together (each at most MAX_HELD_RANGES): what a piece's work is bounded by. */
  get rangeCount(): number {
    let n = 0;
    for (const p of this.partials.values()) n += p.ranges;
    return n;
  }

  /** Take one fragment; the whole message when it completes it. */
  onFragment(now: number, f: FragmentMsg): Uint8Array | undefined {
    const d = this.done.get(f.msgId);
    if (d !== undefined) {
      if (d.total === f.total && d.count === f.count) {
        this.dirty.add(f.msgId); // the sender missed our acknowledgement: say it again
        this.drop('fragment-duplicate', `fragment ${f.index} of completed message ${f.msgId}`);
        return undefined;
      }
      this.done.delete(f.msgId); // an id reused by a restarted peer: a new message
    }
    let p = this.partials.get(f.msgId);
    if (p === undefined) {
      if (!this.makeRoom(now, reassemblyCharge(f.total))) {
        this.drop(
          'fragment-quota',
          `message ${f.msgId} of ${f.total} bytes: ${this.heldBytes} of the ${this.quota}-byte reassembly quota held by ${this.partials.size} partial message(s)`,
        );
        return undefined;
      }
      p = {
        total: f.total,
        count: f.count,
        buf: new Uint8Array(f.total),
        have: 0,
        lastAt: now,
        unacked: 0,
        held: new Uint32Array(16),
        ranges: 0,
      };
      this.partials.set(f.msgId, p);
      this.heldBytes += reassemblyCharge(f.total);
    }
    if (p.total !== f.total || p.count !== f.count) {
      this.discard(f.msgId, p, now);
      this.drop('fragment-conflict', `message ${f.msgId}: ${f.count} pieces of ${f.total} bytes, earlier ${p.count} of ${p.total}`);
      return undefined;
    }
    const off = f.index * Math.ceil(f.total / f.count);
    const at = rangeAt(p, f.index);
    if (at > 0 && p.held[2 * at - 1] >= f.index) {
      for (let i = 0; i < f.bytes.length; i++) {
        if (p.buf[off + i] !== f.bytes[i]) {
          this.discard(f.msgId, p, now);
          this.drop('fragment-conflict', `message ${f.msgId}: piece ${f.index} arrived twice with different bytes`);
          return undefined;
        }
      }
      this.dirty.add(f.msgId);
      this.drop('fragment-duplicate', `piece ${f.index} of message ${f.msgId}`);
      return undefined;
    }
    if (!hold(p, at, f.index)) {
      this.drop('fragment-quota', `piece ${f.index} of message ${f.msgId}: it would be the ${MAX_HELD_RANGES + 1}th range of pieces held`);
      return undefined;
    }
    p.buf.set(f.bytes, off);
    this.accepted++;
    p.have++;
    p.lastAt = now;
    this.dirty.add(f.msgId);
    if (++p.unacked >= ACK_EVERY) this.urgent = true;
    if (p.have < p.count) return undefined;
    this.partials.delete(f.msgId);
    this.heldBytes -= reassemblyCharge(p.total);
    this.done.set(f.msgId, { total: p.total, count: p.count });
    if (this.done.size > DONE_MEMORY) this.done.delete(this.done.keys().next().value!);
    this.urgent = true;
    return p.buf;
  }

  /** Free room for a new message charged `charge` bytes, evicting stale partial messages (oldest first) if need be. */
  private makeRoom(now: number, charge: number): boolean {
    if (charge > this.quota) return false;
    this.settleDebt(now);
    while (this.partials.size >= MAX_PARTIALS || this.heldBytes + charge > this.quota) {
      let oldest: [number, Partial] | undefined;
      for (const e of this.partials) if (!oldest || e[1].lastAt < oldest[1].lastAt) oldest = e;
      if (!oldest || now - oldest[1].lastAt < this.staleMs) return false;
      this.discard(oldest[0], oldest[1]);
      this.drop('fragment-quota', `partial message ${oldest[0]} evicted: nothing heard of it for ${now - oldest[1].lastAt} ms`);
    }
    return true;
  }

  /** Forget a partial message; its charge stays held until staleMs after `conflictAt` when one is given (a conflict). */
  private discard(id: number, p: Partial, conflictAt?: number): void {
    this.partials.delete(id);
    this.dirty.delete(id);
    if (conflictAt === undefined) this.heldBytes -= reassemblyCharge(p.total);
    else {
      this.debt += reassemblyCharge(p.total);
      this.debtUntil = Math.max(this.debtUntil, conflictAt + this.staleMs);
    }
  }

  /** Release the charges of conflicting messages once staleMs passed since the latest conflict. */
  private settleDebt(now: number): void {
    if (this.debt === 0 || now < this.debtUntil) return;
    this.heldBytes -= this.debt;
    this.debt = 0;
  }

  /** Evict partial messages stale at `now` (housekeeping on the pair's timeout). */
  evictStale(now: number): void {
    this.settleDebt(now);
    for (const [id, p] of [...this.partials]) {
      if (now - p.lastAt >= this.staleMs) {
        this.discard(id, p);
        this.drop('fragment-quota', `partial message ${id} evicted: nothing heard of it for ${now - p.lastAt} ms`);
      }
    }
  }

  /** Whether acknowledgements are owed. */
  get owed(): boolean {
    return this.dirty.size > 0;
  }

  /** The acknowledgements owed, one per message, oldest first (still owed until `acksSent`). */
  pendingAcks(): FragmentAckMsg[] {
    const out: FragmentAckMsg[] = [];
    for (const id of this.dirty) {
      const p = this.partials.get(id);
      const d = this.done.get(id);
      if (p) out.push({ type: MsgType.FragmentAck, msgId: id, ranges: ranges(p) });
      else if (d) out.push({ type: MsgType.FragmentAck, msgId: id, ranges: [{ from: 0, to: d.count - 1 }] });
      else this.dirty.delete(id); // forgotten since (evicted): nothing to say
    }
    return out;
  }

  /** The first `n` acknowledgements of `pendingAcks` left; the others stay owed. */
  acksSent(n: number): void {
    for (const id of [...this.dirty].slice(0, n)) {
      this.dirty.delete(id);
      const p = this.partials.get(id);
      if (p) p.unacked = 0;
    }
    this.urgent = false;
  }

  /** A new session: the peer's ids start again; nothing partial can complete. */
  reset(): void {
    this.partials.clear();
    this.done.clear();
    this.dirty.clear();
    this.heldBytes = 0;
    this.debt = 0;
    this.urgent = false;
  }
}

/** The received indexes as ascending ranges, at most MAX_FRAGMENT_ACK_RANGES (the lowest). */
function ranges(p: Partial): IndexRange[] {
  const out: IndexRange[] = [];
  for (let k = 0; k < p.ranges && k < MAX_FRAGMENT_ACK_RANGES; k++) out.push({ from: p.held[2 * k], to: p.held[2 * k + 1] });
  return out;
}

/** The number of held ranges starting at or below index `i` (a binary search): range `at − 1` is the last that may hold it. */
function rangeAt(p: Partial, i: number): number {
  let lo = 0;
  let hi = p.ranges;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (p.held[2 * mid] > i) hi = mid;
    else lo = mid + 1;
  }
  return lo;
}

/**
 * Add index `i` (not held yet; `at = rangeAt(p, i)`) to the ranges, joining its neighbours.
 * False, and nothing changed, if it would be an isolated piece past MAX_HELD_RANGES. The work is
 * the search and, for an isolated piece or a join of two ranges, a move of at most
 * MAX_HELD_RANGES pairs (2 KiB): before, a peer scattering 1-byte pieces made each one a move of
 * up to 32,771 references.
 */
function hold(p: Partial, at: number, i: number): boolean {
  const h = p.held;
  const joinsPrev = at > 0 && h[2 * at - 1] === i - 1;
  const joinsNext = at < p.ranges && h[2 * at] === i + 1;
  if (joinsPrev && joinsNext) {
    h[2 * at - 1] = h[2 * at + 1];
    h.copyWithin(2 * at, 2 * at + 2, 2 * p.ranges);
    p.ranges--;
  } else if (joinsPrev) h[2 * at - 1] = i;
  else if (joinsNext) h[2 * at] = i;
  else {
    if (p.ranges >= MAX_HELD_RANGES) return false;
    if (2 * p.ranges + 2 > h.length) {
      p.held = new Uint32Array(Math.min(2 * MAX_HELD_RANGES, 2 * h.length));
      p.held.set(h.subarray(0, 2 * p.ranges));
    }
    p.held.copyWithin(2 * at + 2, 2 * at, 2 * p.ranges);
    p.held[2 * at] = i;
    p.held[2 * at + 1] = i;
    p.ranges++;
  }
  return true;
}

/** Whether ascending disjoint ranges (as decoded: §3.7.2) hold index `i`; a binary search. */
function covers(rs: readonly IndexRange[], i: number): boolean {
  let lo = 0;
  let hi = rs.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (rs[mid].to < i) lo = mid + 1;
    else hi = mid;
  }
  return lo < rs.length && rs[lo].from <= i;
}
