/**
 * Fragmentation of QN messages larger than a datagram, per direct link (docs/PROTOCOL.md
 * §15.9). A message (a whole envelope: an append with one large entry, a forwarded large
 * candidate, either of them sealed for a relay) is cut into `frag` messages to the next hop
 * and reassembled there before the member sees it; a relay reassembles, then cuts again for
 * its next hop. The pair's machinery does the work (core/pair/fragment.ts: selective
 * acknowledgements, a window, RFC 9002's loss thresholds, a bounded reassembler).
 *
 * Per hop rather than end to end because the seal of §15.5 covers a whole body: a relay could
 * not check a piece, and acknowledgements would have to cross the relay sealed as well. Each
 * hop is an ETCP session that authenticates the link, so a fragment comes from the member it
 * claims, and the bytes it makes a member hold are charged to that member: its link's quota.
 */
import { addRttSample } from '../util/rtt.js';
import { MsgType, type FragmentMsg } from '../../wire/messages.js';
import { QN_MAX_DATAGRAM, type QnBody } from '../../wire/qn.js';
import { FragmentSender, Reassembler, reassemblyCharge, type FragmentDrop } from '../pair/fragment.js';
import type { NodeId } from './raft.js';

/** Own large messages queued or in flight per link (Raft resends what does not fit): a window of snapshot chunks and a few appends. */
const OUT_PER_LINK = 16;

export interface LinkOptions {
  /** Bytes of partial messages one link may make this member hold. */
  quota: number;
  /** Bytes of own messages queued per link beyond the first (the first is always taken). */
  outBytes: number;
  /** A fragment unacknowledged this long is lost (and sent again): before the link's first RTT sample, and the most ever. */
  rtoMs: number;
  /** A partial message silent this long may be evicted; a sender without progress for twice this sends its messages again under new ids. */
  staleMs: number;
  /** An acknowledgement that is not urgent waits at most this long. */
  ackDelayMs: number;
  random: (min: number, max: number) => number;
  drop: (reason: FragmentDrop, detail: string) => void;
}

/** The least loss timeout: a delayed acknowledgement must not look like a loss. */
const MIN_RTO_MS = 20;
/** The largest multiple of the timeout a link backs off to (second review: a dead member drew a full window every RTO). */
const MAX_BACKOFF = 64;

interface Link {
  sender: FragmentSender;
  reasm: Reassembler;
  /** Smoothed round trip and its variation (RFC 6298), from fragment acknowledgements. */
  srtt: number | undefined;
  rttvar: number;
  /** RFC 6298 §5.5: the timeout doubles on each expiry (up to MAX_BACKOFF), back to 1 on a fresh sample. */
  backoff: number;
  /** When the owed acknowledgements must leave (Infinity: none owed). */
  ackAt: number;
}

export class QnLinks {
  private readonly links = new Map<NodeId, Link>();
  readonly stats = { fragmentsSent: 0, fragmentsResent: 0, messagesFragmented: 0, messagesReassembled: 0, outFull: 0, restarts: 0 };

  constructor(private readonly o: LinkOptions) {}

  private link(id: NodeId): Link {
    let l = this.links.get(id);
    if (!l) {
      // Ids start at random: a restarted member's new messages are not taken for old ones.
      const sender = new FragmentSender(QN_MAX_DATAGRAM, { outLimit: OUT_PER_LINK, firstId: this.o.random(1, 2 ** 31) });
      l = {
        sender,
        reasm: new Reassembler(this.o.quota, this.o.staleMs, this.o.drop),
        ackAt: Infinity,
        srtt: undefined,
        rttvar: 0,
        backoff: 1,
      };
      this.links.set(id, l);
    }
    return l;
  }

  /**
   * Queue a message too large for one datagram to `hop`; `key` names it so a resend while it is
   * under way is not a second copy. False: the link's queue is full (the caller's protocol resends).
   */
  send(now: number, hop: NodeId, bytes: Uint8Array, key: { key: string; remember: boolean } | undefined): boolean {
    const l = this.link(hop);
    const before = l.sender.stats.messagesFragmented;
    const over =
      l.sender.pending > 0 && l.sender.bytes + reassemblyCharge(bytes.length) > this.o.outBytes && !(key && l.sender.holds(now, key.key));
    if (over || !l.sender.add(now, bytes, key?.key, key?.remember)) {
      this.stats.outFull++;
      return false;
    }
    this.stats.messagesFragmented += l.sender.stats.messagesFragmented - before;
    return true;
  }

  /** A fragment from link `from` (already checked on the wire); the whole message when it completes one. */
  onFragment(now: number, from: NodeId, b: Extract<QnBody, { t: 'frag' }>): Uint8Array | undefined {
    const l = this.link(from);
    const f: FragmentMsg = { type: MsgType.Fragment, msgId: b.msgId, total: b.total, index: b.index, count: b.count, bytes: b.bytes };
    const whole = l.reasm.onFragment(now, f);
    if (l.reasm.owed) l.ackAt = Math.min(l.ackAt, l.reasm.urgent ? now : now + this.o.ackDelayMs);
    if (whole) this.stats.messagesReassembled++;
    return whole;
  }

  onAck(now: number, from: NodeId, b: Extract<QnBody, { t: 'fragAck' }>): void {
    const l = this.links.get(from);
    if (!l) return;
    l.sender.onAck(now, { type: MsgType.FragmentAck, msgId: b.msgId, ranges: b.ranges }, this.lossDelay(l), this.rto(l));
    const sample = l.sender.rttSample;
    if (sample === undefined) return;
    l.backoff = 1;
    addRttSample(l, sample);
  }

  /** A link no longer configured: its queues and reassembly go with it. */
  remove(id: NodeId): void {
    this.links.delete(id);
  }

  /** Drop own queued messages whose key `stale` names, on every link. */
  forget(stale: (key: string) => boolean): void {
    for (const l of this.links.values()) l.sender.forget(stale);
  }

  /** RFC 6298's timeout, with room for the receiver's acknowledgement delay, within [MIN_RTO_MS, rtoMs]. */
  private rto(l: Link): number {
    const base =
      l.srtt === undefined
        ? this.o.rtoMs
        : Math.min(this.o.rtoMs, Math.max(MIN_RTO_MS, l.srtt + Math.max(4 * l.rttvar, 1) + this.o.ackDelayMs));
    return base * l.backoff;
  }

  /** RFC 9002 §6.1.2: how long a fragment overtaken by acknowledged ones may still be merely reordered. */
  private lossDelay(l: Link): number {
    return l.srtt === undefined ? this.o.rtoMs / 2 : Math.max(1, (9 / 8) * l.srtt);
  }

  /** What is due to each link at `now`: acknowledgements, then fragments within each window. */
  pump(now: number, send: (to: NodeId, body: QnBody) => void): void {
    for (const [id, l] of this.links) {
      if (l.ackAt <= now) {
        const acks = l.reasm.pendingAcks();
        for (const a of acks) send(id, { t: 'fragAck', msgId: a.msgId, ranges: a.ranges });
        l.reasm.acksSent(acks.length);
        l.ackAt = Infinity;
      }
      const s = l.sender;
      if (s.pending > 0) {
        if (s.detectLost(now, this.rto(l))) l.backoff = Math.min(l.backoff * 2, MAX_BACKOFF);
        // No fragment acknowledged for long: the peer restarted (and forgot its partial
        // messages) or is withholding; send everything again under new ids.
        if (now - s.lastProgressAt >= 2 * this.o.staleMs) {
          s.reset();
          s.lastProgressAt = now;
          this.stats.restarts++;
        }
      }
      const sent0 = s.stats.fragmentsSent;
      const resent0 = s.stats.fragmentsResent;
      for (let f = s.next(now, QN_MAX_DATAGRAM); f; f = s.next(now, QN_MAX_DATAGRAM))
        send(id, { t: 'frag', msgId: f.msgId, total: f.total, index: f.index, count: f.count, bytes: f.bytes });
      this.stats.fragmentsSent += s.stats.fragmentsSent - sent0;
      this.stats.fragmentsResent += s.stats.fragmentsResent - resent0;
      l.reasm.evictStale(now);
    }
  }

  /** The earliest time pump() has something to do (stale partial messages go on any pump; the hello timer runs one every heartbeat). */
  deadline(): number {
    let t = Infinity;
    for (const l of this.links.values()) {
      t = Math.min(t, l.ackAt);
      if (l.sender.pending > 0) t = Math.min(t, l.sender.deadline(this.rto(l)) ?? Infinity, l.sender.lastProgressAt + 2 * this.o.staleMs);
    }
    return t;
  }

  /** Bytes of partial messages held for link `id` (within the quota). */
  heldBytes(id: NodeId): number {
    return this.links.get(id)?.reasm.bytes ?? 0;
  }

  /** Bytes held for all links together. */
  get totalHeld(): number {
    let n = 0;
    for (const l of this.links.values()) n += l.reasm.bytes;
    return n;
  }
}
