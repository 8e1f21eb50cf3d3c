/**
 * HalfPair: one endpoint's side of a pair (docs/PROTOCOL.md). It owns the pair
 * lifecycle, the registers (replicas) shared over the pair, peer liveness, RTT and
 * retransmission timing, and packing of messages into Data frames.
 *
 * Sans-I/O, in the style of quinn-proto: the driver feeds datagrams and timeouts in,
 * pulls datagrams, the next deadline and events out, and passes `now` (ms) on every
 * call. Nothing here reads a clock, touches a socket or draws a random number, so the
 * daemon and the simulator run the same code and a seed replays a run exactly. Nor does it
 * write to disk: each step records what must be durable (PairWrite), and nothing the step
 * caused is released until the driver has made that durable (`pollWrites`, `writesDurable`).
 */
import { addRttSample, type RttState } from '../util/rtt.js';
import { DROP_REASON_NAMES, FrameType, HEADER_LEN, MAX_PAYLOAD_LEN, MAX_REGISTER_NAME_LEN } from '../../wire/constants.js';
import { WireError } from '../../wire/errors.js';
import { decodeFrame, encodeFrame, writeFrameHeader } from '../../wire/header.js';
import {
  CloseReason,
  MANIFEST_MATCHED,
  MANIFEST_REPLY,
  MsgType,
  decodeMessages,
  encodeMessage,
  type AckMsg,
  type FragmentMsg,
  type ManifestEntry,
  type ManifestMsg,
  type Message,
} from '../../wire/messages.js';
import { FragmentSender, Reassembler, type FragmentDrop } from './fragment.js';
import type { EntryDelta } from '../../wire/cross.js';
import type { SpookEvent } from './events.js';
import { Lifecycle, LifecycleEvent, PairState } from './lifecycle.js';
import { PayloadBuilder, type LargeSink } from './payload.js';
import type { PairDrop, PairDropCounts } from './drops.js';
import { Deque } from '../util/deque.js';
import { ManifestAssembly, OwnManifest, describeDiff, describeDiffs, diffManifests, manifestEntry, type ManifestDiff } from './manifest.js';
import type { Follower } from './follower.js';
import { checkMaxValueBytes, quotaMax, type Quota } from '../register/quota.js';
import { ProposeError, Replica } from './replica.js';
import { ActiveRegisters } from './active.js';
import type { RegisterTimer } from './shared.js';
import {
  REGISTER_DEFAULTS,
  persistWrites,
  type PairContext,
  type PairRole,
  type PairStore,
  type PairWrite,
  type RegisterConfig,
} from './types.js';

export interface Timing {
  /** Send a Status for every register at least this often (liveness probe). */
  keepaliveMs: number;
  /** No valid frame from the peer for this long: decoherence (peer-silent). */
  silenceMs: number;
  initialRtoMs: number;
  minRtoMs: number;
  maxRtoMs: number;
  /** Longest an acknowledgement of an ack-eliciting frame waits for a frame to ride on. */
  maxAckDelayMs: number;
}

export const DEFAULT_TIMING: Timing = {
  keepaliveMs: 1000,
  silenceMs: 5000,
  initialRtoMs: 250,
  minRtoMs: 20,
  maxRtoMs: 3000,
  maxAckDelayMs: 10,
};

export type RegisterSpec = Pick<RegisterConfig, 'name' | 'kind'> &
  Partial<Omit<RegisterConfig, 'name' | 'kind' | 'quota'>> & { quota?: Partial<RegisterConfig['quota']> };

/**
 * The link's timers (named as quinn-proto's connection/timer.rs names its own); the registers
 * add theirs (RegisterTimer, shared.ts):
 * - silence: nothing heard for silenceMs while ENTANGLED, COLLAPSING or REENTANGLING: the peer is silent;
 * - keepalive: keepaliveMs since the last: every register's Status goes out again;
 * - ack: an ack-eliciting frame arrived; its Ack rides the next datagram, or leaves alone at maxAckDelayMs;
 * - fragment: a fragment of an own large message stayed unacknowledged for an RTO (§3.4).
 */
export const LINK_TIMERS = ['silence', 'keepalive', 'ack', 'fragment'] as const;
export type LinkTimer = (typeof LINK_TIMERS)[number];
export type PairTimer = LinkTimer | RegisterTimer;
/** One armed timer: the link's, or a register's (with its name). */
export type PairDeadline =
  { readonly timer: LinkTimer; readonly at: number } | { readonly timer: RegisterTimer; readonly register: string; readonly at: number };

export interface HalfPairOptions {
  pairId: number;
  /** Member ids of this endpoint and its peer; the lower one is the pair's sequencer. */
  localId: number;
  peerId: number;
  /** Hash seed both ends share (from pair formation). */
  seed: number;
  registers: RegisterSpec[];
  timing?: Partial<Timing>;
  /** Largest payload per Data frame (path MTU less headers, less the AEAD tag when sealed). */
  maxPayload?: number;
  /**
   * Turns a payload into a protected Data frame (ETCP). Without one, frames go out in the
   * clear with this pair's own packet numbers (simulator, tests).
   */
  sealer?: FrameSealer;
  /**
   * Each step's writes (PairWrite) are handed to the driver, in the spirit of etcd raft's
   * `Ready`: it takes them with `pollWrites()`, makes them durable (batching several steps
   * and pairs into one fsync if it likes) and says so with `writesDurable()`; until then
   * `pollTransmit` and `pollEvent` release nothing (spookd, the pair simulator).
   */
  writes?: 'driver';
  /**
   * The convenience instead (tests): each step's writes are persisted synchronously into
   * this store when the step returns, before anything it caused can be polled. With neither,
   * the writes are dropped (nothing durable: demos, benchmarks of the core).
   */
  store?: PairStore;
  /**
   * Bytes of the peer's partial fragmented messages this end holds at most (§3.4). Default:
   * 4 times the largest register value limit plus 1 MiB.
   */
  reassemblyQuota?: number;
  /**
   * Every step visits every register, as before the active set (active.ts): the reference the
   * differential simulation compares the set with (test/pair-active.test.ts). Off in the product.
   */
  visitEvery?: boolean;
}

/** The fragmentation layer's counters (§3.4). */
export interface FragmentStats {
  messagesFragmented: number;
  fragmentsSent: number;
  fragmentsResent: number;
  /** Own large messages queued or in flight. */
  sending: number;
  /** Bytes and count of the peer's partial messages held (within `reassemblyQuota`). */
  reassemblyBytes: number;
  reassemblyQuota: number;
  partials: number;
}

export interface FrameSealer {
  seal(payload: Uint8Array): { frame: Uint8Array; packetNumber: number };
  /**
   * The same without a copy (optional): `frame` holds the payload at [HEADER_LEN, frame.length -
   * tailroom), with room for the header in front and `tailroom` octets (the AEAD tag) behind;
   * the header is written and the payload sealed where it is. Returns the packet number.
   */
  sealInPlace?(frame: Uint8Array): number;
  readonly tailroom?: number;
}

export interface PairStats {
  datagramsSent: number;
  datagramsReceived: number;
  bytesSent: number;
  bytesReceived: number;
  drops: PairDropCounts;
  retransmitTimeouts: number;
  reentanglements: number;
  fullTransfers: number;
  /** Bytes sent and received while REENTANGLING. */
  reentangleBytes: number;
  eventsDropped: number;
}

const OUTBOX_LIMIT = 1024;
/** Small messages (a collapse of a few small deltas, a reconciliation request) must fit a payload; larger ones are fragmented. */
const MIN_PAYLOAD = 1400;
const EVENT_LIMIT = 65536;
const PN_RING = 1024;
const MAX_BACKOFF = 64;

/**
 * The name under which a response larger than a payload is fragmented (§3.4): the same
 * answer asked for again while it is under way is not sent twice.
 */
function largeKey(m: Message): string | undefined {
  switch (m.type) {
    case MsgType.ReconEntries:
      return `entries/${m.register}/${m.targetVersion}/${m.depth}/${m.prefix}/${m.part}`;
    case MsgType.SnapChunk:
      return `chunk/${m.register}/${m.targetVersion}/${m.chunk}`;
    case MsgType.ReconDiff:
      return `diff/${m.register}/${m.targetVersion}/${m.since}/${m.part}`;
    default:
      return undefined;
  }
}

const NO_REGISTERS: readonly Replica[] = [];

export class HalfPair {
  readonly role: PairRole;
  private readonly lifecycle: Lifecycle;
  private readonly regs = new Map<string, Replica>();
  /** The registers in order (fixed at construction): the poll paths iterate it without a copy. */
  private readonly regList: Replica[];
  /** Those that may have work (active.ts): every step but the keepalive visits only these. */
  private readonly active: ActiveRegisters<Replica>;
  private readonly counters: PairStats = {
    datagramsSent: 0,
    datagramsReceived: 0,
    bytesSent: 0,
    bytesReceived: 0,
    drops: {},
    retransmitTimeouts: 0,
    reentanglements: 0,
    fullTransfers: 0,
    reentangleBytes: 0,
    eventsDropped: 0,
  };
  private readonly timing: Timing;
  private readonly maxPayload: number;
  /** The payload pollTransmit fills, reset per poll (pollTransmit does not nest). */
  private readonly builder: PayloadBuilder;
  /** The fragmentation layer as pollTransmit's payloads see it (one object, at the time of the poll under way). */
  private txNow = 0;
  private readonly largeSink: LargeSink = {
    add: (raw, key) => this.fragOut.add(this.txNow, raw, key),
    holds: (key) => this.fragOut.holds(this.txNow, key),
    canTake: (bytes) => this.fragOut.canTake(bytes),
  };
  private readonly events = new Deque<SpookEvent>();
  private outbox: Message[] = [];
  /** The encoding of a large response the fragmentation layer refused (full), so that it is not encoded again for each datagram. */
  private readonly outboxRaw = new WeakMap<Message, Uint8Array>();
  /** What the steps since the last `pollWrites` must make durable (collected only with a durability). */
  private writes: PairWrite[] = [];
  /** Writes taken by `pollWrites` that the driver has not acknowledged as durable yet. */
  private writesInFlight = false;
  /** The batch the writes recorded now go to, and the last durable one (batches counted from 1). */
  private writeBatch = 1;
  private durableBatch = 0;
  /**
   * The last batch that replaced a follower's register (0: none waiting): that register's next
   * records wait until it is durable (§10.1), then the next `collapse` applies them.
   */
  private replacedBatch = 0;
  /** Fenced by the driver: what was not released is gone, and no datagram leaves any more. */
  private isFenced = false;
  private closeQueued: CloseReason | undefined;
  private rr = 0;
  /** PairContext.stamp: the order of proposals and arrivals across registers. */
  private stamps = 0;
  /** `now` of the step under way (for drops reported from callbacks). */
  private lastStep: number | undefined;

  // Register manifests (§6.3): this end's, the peer's being reassembled, and what is known.
  private manifest: OwnManifest;
  private readonly peerParts = new ManifestAssembly();
  /** The peer's last complete manifest's entries (what a change of our limits is compared with). */
  private peerEntries: readonly ManifestEntry[] | undefined;
  /** The peer's last complete manifest: not received yet, equal to ours, or different. */
  private peerManifest: 'none' | 'match' | 'mismatch' = 'none';
  /** The peer said (MATCHED) it holds ours and found it equal: no need to send it again. */
  private peerHasOurs = false;
  /** Ours is to be sent (its flags then say whether it answers the peer's). */
  private manifestDue: { reply: boolean } | undefined = { reply: false };
  /** Parts of ours not yet packed into a datagram. */
  private manifestOut: ManifestMsg[] = [];
  /** How the registers differ while they do (the pair is then DECOHERENT): undefined otherwise. */
  private mismatch: ManifestDiff[] | undefined;

  // Liveness and acknowledgement.
  private lastHeard: number;
  private lastKeepalive = -Infinity;
  private nextPn = 0;
  /** The largest packet number received since our last Ack went out: the one the next Ack names (§9.1). */
  private largestReceived = -1;
  private largestReceivedAt = 0;
  /**
   * An Ack named largestReceived: the next frame starts a new range whatever its number. Kept across
   * Acks, a number from the peer's old session (a frame that reached us after our switch at a rekey,
   * §12.6) stayed the largest until the new session's numbers passed it, and every Ack named a number
   * the peer, restarted at 0, never sent: it took no RTT sample and its backoff never reset.
   */
  private ackNamed = false;
  private ackDueAt: number | undefined;
  /**
   * The ack timer fired: the Ack leaves alone on the next pollTransmit, with no deadline left
   * armed (the driver may have no session to send on for a long while; a past deadline would
   * ask for handleTimeout again at once, forever).
   */
  private ackOverdue = false;
  private largestAcked = -1;
  private readonly sentPn = new Float64Array(PN_RING).fill(-1);
  private readonly sentAt = new Float64Array(PN_RING);
  /** RFC 6298 smoothed RTT and variation, from Ack samples. */
  private readonly rtt: RttState = { srtt: undefined, rttvar: 0 };
  private backoff = 1;
  // Messages larger than a payload (§3.4).
  private readonly fragOut: FragmentSender;
  private readonly fragIn: Reassembler;

  constructor(
    readonly opts: HalfPairOptions,
    now: number,
  ) {
    if (opts.localId === opts.peerId) throw new RangeError(`localId and peerId are both ${opts.localId}`);
    if (opts.store && opts.writes === 'driver') throw new RangeError('a pair takes a store or hands its writes to the driver, not both');
    this.role = opts.localId < opts.peerId ? 'sequencer' : 'follower';
    // Unset (undefined) fields keep their defaults.
    this.timing = { ...DEFAULT_TIMING, ...Object.fromEntries(Object.entries(opts.timing ?? {}).filter(([, v]) => v !== undefined)) };
    this.maxPayload = Math.min(opts.maxPayload ?? MAX_PAYLOAD_LEN, MAX_PAYLOAD_LEN);
    if (this.maxPayload < MIN_PAYLOAD)
      throw new RangeError(`maxPayload ${this.maxPayload} is below ${MIN_PAYLOAD}: a largest delta must fit one frame`);
    this.builder = new PayloadBuilder(this.maxPayload, this.largeSink);
    this.lifecycle = new Lifecycle(now);
    this.lastHeard = now;
    const ctx = this.context();
    for (const spec of opts.registers) {
      if (this.regs.has(spec.name)) throw new RangeError(`register ${spec.name} declared twice`);
      const nameLen = new TextEncoder().encode(spec.name).length;
      if (nameLen === 0 || nameLen > MAX_REGISTER_NAME_LEN) {
        throw new RangeError(`register name ${JSON.stringify(spec.name)} is ${nameLen} bytes; it must be 1..${MAX_REGISTER_NAME_LEN}`);
      }
      const cfg: RegisterConfig = {
        policy: REGISTER_DEFAULTS.policy,
        maxPending: REGISTER_DEFAULTS.maxPending,
        log: REGISTER_DEFAULTS.log,
        // Unset (undefined) fields keep their defaults.
        ...(Object.fromEntries(Object.entries(spec).filter(([, v]) => v !== undefined)) as RegisterSpec),
        quota: { ...REGISTER_DEFAULTS.quota, ...Object.fromEntries(Object.entries(spec.quota ?? {}).filter(([, v]) => v !== undefined)) },
      };
      checkMaxValueBytes(spec.name, cfg.quota);
      this.regs.set(spec.name, new Replica(cfg, ctx, this.regs.size));
    }
    this.regList = [...this.regs.values()];
    this.active = new ActiveRegisters(this.regList, opts.visitEvery);
    this.manifest = new OwnManifest(this.regList.map((r) => manifestEntry(r.cfg)));
    let largest = 0;
    for (const r of this.regList) largest = Math.max(largest, r.cfg.quota.maxValueBytes);
    // The default reassembly quota, the peer's too (the manifest makes the registers' limits equal):
    // own large messages stay within it, so the peer can take all of them at once.
    const defaultQuota = 4 * largest + (1 << 20);
    this.fragOut = new FragmentSender(this.maxPayload, { byteLimit: defaultQuota });
    this.fragIn = new Reassembler(opts.reassemblyQuota ?? defaultQuota, this.timing.silenceMs, (reason, detail) =>
      this.fragmentDrop(now, reason, detail),
    );
  }

  /** The fragmentation layer's counters and the reassembly memory held. */
  get fragments(): FragmentStats {
    return {
      ...this.fragOut.stats,
      sending: this.fragOut.pending,
      reassemblyBytes: this.fragIn.bytes,
      reassemblyQuota: this.fragIn.quota,
      partials: this.fragIn.partialCount,
    };
  }

  /** Duplicates are routine (retransmissions): counted without an event each. */
  private fragmentDrop(now: number, reason: FragmentDrop, detail: string): void {
    if (reason === 'fragment-duplicate') this.counters.drops[reason] = (this.counters.drops[reason] ?? 0) + 1;
    else this.drop(this.lastStep ?? now, reason, detail);
  }

  private context(): PairContext {
    // eslint-disable-next-line @typescript-eslint/no-this-alias
    const self = this;
    return {
      role: this.role,
      localId: this.opts.localId,
      peerId: this.opts.peerId,
      seed: this.opts.seed,
      get state() {
        return self.lifecycle.state;
      },
      rto: () => this.rto(),
      keepaliveMs: this.timing.keepaliveMs,
      emit: (ev) => this.emit(ev),
      maxPayload: this.maxPayload,
      respond: (now, m) => {
        if (this.outbox.length >= OUTBOX_LIMIT) this.drop(now, 'outbox-full', 'response dropped; the peer re-requests');
        else this.outbox.push(m);
      },
      trigger: (now, event, detail) => this.trigger(now, event, detail),
      countFullTransfer: () => {
        this.counters.fullTransfers++;
      },
      drop: (now, reason, detail, n) => this.drop(now, reason, detail, n),
      persist: (w) => {
        if (this.isFenced || !(this.opts.store || this.opts.writes === 'driver')) return 0;
        this.writes.push(w);
        if (w.kind === 'replaced') this.replacedBatch = this.writeBatch;
        return this.writeBatch;
      },
      durable: (batch) => batch <= this.durableBatch,
      sibling: (name) => {
        const r = this.regs.get(name);
        if (r) this.active.wake(r);
        return r;
      },
      wake: (r) => this.active.wake(r),
      stamp: () => ++this.stamps,
      stampAbove: (stamp) => {
        this.stamps = Math.max(this.stamps, stamp);
      },
      pendingAppendBytes: (register) => {
        let n = 0;
        for (const r of this.active.any) n += r.ownAppendBytes(register); // a quiet register has no own candidate
        return n;
      },
    };
  }

  get state(): PairState {
    return this.lifecycle.state;
  }

  /** When the pair entered its current state (ms). */
  get since(): number {
    return this.lifecycle.since;
  }

  /**
   * Fenced by the driver (`fence`, `writesFailed`): it takes no write, and its registers may hold
   * what never became durable (the collapse of a batch that failed), so nothing should read them.
   */
  get fenced(): boolean {
    return this.isFenced;
  }

  get registers(): ReadonlyMap<string, Replica> {
    return this.regs;
  }

  /** Counters (the driver's metrics). */
  get stats(): Readonly<PairStats> {
    return this.counters;
  }

  get pairId(): number {
    return this.opts.pairId;
  }

  /** Smoothed RTT in ms, once measured. */
  get rttMs(): number | undefined {
    return this.rtt.srtt;
  }

  /**
   * How this end's registers differ from the peer's (§6.3), while they do: the pair is then
   * DECOHERENT with cause `register-mismatch` and refuses writes. Undefined when they match or
   * the peer's manifest is not known yet (`peerManifestState`).
   */
  get registerMismatch(): readonly ManifestDiff[] | undefined {
    return this.mismatch;
  }

  /** Whether the peer's register manifest is known, and equal to this end's. */
  get peerManifestState(): 'none' | 'match' | 'mismatch' {
    return this.peerManifest;
  }

  register(name: string): Replica {
    const r = this.registers.get(name);
    if (!r) throw new RangeError(`no register named ${name} on pair ${this.opts.pairId}`);
    return r;
  }

  // ------------------------------------------------------------------ driver API

  /** Propose a local change. Throws ProposeError (buffer-full, frozen, invalid, closed, fenced) instead of dropping it. */
  propose(now: number, register: string, delta: EntryDelta): { origin: number; seq: number } {
    // A fenced pair persists nothing and its sequencer collapses nothing: a candidate taken now
    // would never be decided and a restart would lose it.
    if (this.isFenced) throw new ProposeError('fenced', `register ${register}: pair is fenced (restart spookd to resume it)`);
    // Nothing would commit until the configurations agree: refuse rather than leave it pending.
    if (this.mismatch) {
      const own = this.mismatch.find((d) => d.register === register);
      throw new ProposeError(
        'register-mismatch',
        own
          ? `${describeDiff(own)}; fix the configuration and restart spookd`
          : `register ${register}: the pair's registers differ from the peer's (${describeDiffs(this.mismatch)}); fix the configuration and restart spookd`,
      );
    }
    const id = this.register(register).propose(now, delta);
    this.evaluate(now);
    this.endStep(now);
    return id;
  }

  /**
   * Own candidate `seq` of `register`, still without an outcome, is about to be reported pending
   * to its proposer (§10.1): record it so that a restart proposes it again. A follower's is
   * recorded when proposed; a sequencer's own is decided at its next collapse and recorded only
   * here, when it waits longer (the ends' registers differ, §6.3). Returns whether it recorded a
   * write (the driver reports "pending" once the batch that takes it is durable).
   */
  secureOwn(now: number, register: string, seq: number): boolean {
    const r = this.registers.get(register);
    if (!r || this.isFenced || this.state === PairState.CLOSED) return false;
    const wrote = r.secureOwn(seq);
    this.endStep(now);
    return wrote;
  }

  /** Feed one received plaintext datagram (simulator, tests), handed over as handlePayload's payload. Returns false if it was dropped (and counted). */
  handleDatagram(now: number, datagram: Uint8Array): boolean {
    if (this.state === PairState.CLOSED) return false;
    let frame;
    try {
      frame = decodeFrame(datagram, (id) => id === this.opts.pairId);
    } catch (e) {
      if (!(e instanceof WireError)) throw e;
      this.counters.datagramsReceived++;
      this.counters.bytesReceived += datagram.length;
      this.drop(now, DROP_REASON_NAMES[e.reason], e.message);
      return false;
    }
    if (frame.header.type !== FrameType.Data) {
      this.counters.datagramsReceived++;
      this.counters.bytesReceived += datagram.length;
      this.drop(now, 'not-data', `frame type ${FrameType[frame.header.type]} is handled by ETCP, not a pair`);
      return false;
    }
    return this.handlePayload(now, frame.header.packetNumber, frame.payload, datagram.length);
  }

  /**
   * Feed the payload of one authenticated Data frame (ETCP opened it) with its packet
   * number; `wireBytes` is the datagram's size, for the byte counters. The payload is handed
   * over: the pair may keep views of it (a collapse record that fills most of it is logged as one),
   * so the caller never changes it afterwards.
   */
  handlePayload(now: number, pn: number, payload: Uint8Array, wireBytes = payload.length): boolean {
    const handled = this.stepPayload(now, pn, payload, wireBytes);
    this.endStep(now);
    return handled;
  }

  private stepPayload(now: number, pn: number, payload: Uint8Array, wireBytes: number): boolean {
    if (this.state === PairState.CLOSED) return false;
    this.lastStep = now;
    this.counters.datagramsReceived++;
    this.counters.bytesReceived += wireBytes;
    let decoded;
    try {
      decoded = decodeMessages(payload);
    } catch (e) {
      if (e instanceof WireError) {
        this.drop(now, DROP_REASON_NAMES[e.reason], e.message);
        return false;
      }
      throw e;
    }
    if (decoded.unknown > 0) this.drop(now, 'unknown-message', `${decoded.unknown} message(s) of unknown type skipped`, decoded.unknown);
    this.lastHeard = now;
    if (this.state === PairState.REENTANGLING) this.counters.reentangleBytes += wireBytes;
    // Manifests first: they decide whether the rest is for registers both ends share (§6.3).
    for (const m of decoded.messages) if (m.type === MsgType.Manifest) this.onManifest(now, m);
    if (this.state === PairState.DECOHERENT && !this.mismatch && this.peerManifest === 'match') {
      this.fire(now, LifecycleEvent.PeerHeard, 'valid frame from peer');
      this.backoff = 1; // the timers backed off against silence, not against this path
      for (const r of this.regList) r.beginReentangle();
    }
    let ackEliciting = false;
    decoded.messages.forEach((m, i) => {
      // Acknowledgements (Ack, FragmentAck, Status: §9.1) elicit none: they are never answered by a datagram of their own.
      if (m.type !== MsgType.Ack && m.type !== MsgType.FragmentAck && m.type !== MsgType.Status) ackEliciting = true;
      if (m.type !== MsgType.Manifest) this.dispatch(now, m, decoded.raws[i]);
    });
    this.drainCross(now);
    // Enough fragments arrived since their last acknowledgement: it leaves with the next datagram.
    if (this.fragIn.urgent) this.ackOverdue = true;
    if (pn > this.largestReceived || this.ackNamed) {
      this.largestReceived = pn;
      this.largestReceivedAt = now;
      this.ackNamed = false;
    }
    if (ackEliciting && this.ackDueAt === undefined && !this.ackOverdue) this.ackDueAt = now + this.timing.maxAckDelayMs;
    this.evaluate(now);
    return true;
  }

  /**
   * Follower: records held because a cross-register txn's parts had not all arrived (§4.6) are
   * applied once they have, whichever register's message completed them. A worklist: every
   * register holding its next record is looked at once, and a register waiting for another is
   * looked at again only when that one's version moves, so the work is bounded by the registers
   * and the records applied (a chain of waits across many registers is not quadratic).
   */
  private drainCross(now: number): void {
    if (this.role !== 'follower') return;
    const queue: Follower[] = [];
    for (const r of this.active.ordered()) if (r.follower?.holdsNext) queue.push(r.follower); // a quiet one holds no record
    const waiters = new Map<Follower, Follower[]>();
    for (let i = 0; i < queue.length; i++) {
      const f = queue[i];
      const moved = f.drainHeld(now);
      if (f.waitingOn !== undefined) {
        const ws = waiters.get(f.waitingOn) ?? [];
        ws.push(f);
        waiters.set(f.waitingOn, ws);
      }
      for (const m of moved) {
        const ws = waiters.get(m);
        if (ws) {
          waiters.delete(m);
          queue.push(...ws);
        }
        // A part record's register moved with its anchor: what it holds next may go now.
        if (m !== f && m.holdsNext) queue.push(m);
      }
    }
  }

  /**
   * A register's quota changed while running (a reload): collapses from now on decide by the new
   * limits; what the register holds is kept, even above them (growth is refused, nothing is
   * dropped). The limits are part of the manifest (§6.3), so ours is sent again: a peer that
   * still has the old ones finds the registers differ and the pair decoheres
   * (`register-mismatch`) until its configuration agrees too; then it re-entangles.
   */
  setQuota(now: number, register: string, quota: Quota): void {
    const r = this.register(register);
    checkMaxValueBytes(register, quota);
    // Collapses decide by the new quota at once; what the peer may make us hold stays the highest
    // so far: a record the sequencer decided under the old, agreed quota may still be on its way.
    r.cfg.holdQuota = quotaMax(r.cfg.holdQuota ?? r.cfg.quota, quota);
    r.cfg.quota = { ...quota };
    this.manifest = new OwnManifest(this.regList.map((x) => manifestEntry(x.cfg)));
    // Large messages of a raised maxValueBytes must fit the fragment quotas (never lowered: a
    // message under way of the old size still reassembles).
    if (this.opts.reassemblyQuota === undefined) {
      let largest = 0;
      for (const x of this.regList) largest = Math.max(largest, x.cfg.quota.maxValueBytes);
      const q = 4 * largest + (1 << 20);
      if (q > this.fragIn.quota) this.fragIn.quota = q;
      if (q > this.fragOut.byteLimit) this.fragOut.byteLimit = q;
    }
    this.peerHasOurs = false;
    this.manifestDue = { reply: false };
    if (this.peerEntries !== undefined) this.judgeManifests(now, diffManifests(this.manifest.entries, this.peerEntries));
  }

  /**
   * The verdict on our manifest against the peer's (`diffs`, §6.3): equal, the pair may form, or a
   * DECOHERENT one re-entangles when the peer is next heard (stepPayload); different, it decoheres
   * with cause `register-mismatch` (once per distinct difference).
   */
  private judgeManifests(now: number, diffs: ReturnType<typeof diffManifests>): void {
    if (diffs.length === 0) {
      this.peerManifest = 'match';
      this.mismatch = undefined;
      return;
    }
    this.peerManifest = 'mismatch';
    const reason = describeDiffs(diffs);
    const changed = this.mismatch === undefined || describeDiffs(this.mismatch) !== reason;
    this.mismatch = diffs;
    if (changed && this.lifecycle.can(LifecycleEvent.RegisterMismatch)) this.fire(now, LifecycleEvent.RegisterMismatch, reason);
  }

  /**
   * A new ETCP session (rekey, re-handshake after a restart) restarts packet numbers:
   * forget the old packet space so acknowledgements and RTT samples do not mix them.
   */
  resetPacketSpace(): void {
    // The peer may have restarted (with another configuration): each end learns the other's manifest
    // again, and until the new one matches, a decoherent pair does not re-entangle (review finding).
    this.peerHasOurs = false;
    this.peerManifest = 'none';
    this.peerEntries = undefined; // what a quota changed by a reload compares with: the new session's manifest only
    this.manifestDue ??= { reply: false };
    this.largestReceived = -1;
    this.ackNamed = false;
    this.largestAcked = -1;
    this.ackDueAt = undefined;
    this.ackOverdue = false;
    this.sentPn.fill(-1);
    // The peer's message ids start again in a new session; ours are resent under new ones.
    this.fragIn.reset();
    this.fragOut.reset();
  }

  private dispatch(now: number, m: Message, raw: Uint8Array): void {
    if (m.type === MsgType.Ack) return this.onAck(now, m);
    if (m.type === MsgType.Fragment) return this.onFragment(now, m);
    if (m.type === MsgType.FragmentAck)
      return this.fragOut.onAck(now, m, (9 / 8) * (this.rtt.srtt ?? this.timing.initialRtoMs), this.rto());
    if (m.type === MsgType.Close) {
      if (m.reason === CloseReason.GoingAway) {
        if (this.lifecycle.can(LifecycleEvent.PeerSilent)) this.fire(now, LifecycleEvent.PeerSilent, 'peer is shutting down');
      } else if (this.lifecycle.can(LifecycleEvent.Close)) this.fire(now, LifecycleEvent.Close, 'peer closed the pair');
      // A second Close (the same payload may carry two) finds the pair CLOSED already: nothing to do.
      return;
    }
    if (m.type === MsgType.Manifest) return; // handled before the rest of its payload (stepPayload)
    if (this.mismatch) {
      // The registers differ: nothing of theirs is exchanged until the configurations agree.
      this.drop(now, 'register-mismatch', `message ${MsgType[m.type]} for register ${JSON.stringify(m.register)} while registers differ`);
      return;
    }
    const r = this.registers.get(m.register);
    if (!r) {
      // Only a peer whose manifest matched ours has broken the protocol by naming a register we lack.
      if (this.peerManifest === 'match')
        this.drop(now, 'unknown-register', `message ${MsgType[m.type]} for register ${JSON.stringify(m.register)}`);
      else
        this.drop(
          now,
          'register-mismatch',
          `message ${MsgType[m.type]} for register ${JSON.stringify(m.register)} before the manifests matched`,
        );
      return;
    }
    r.handle(now, m, raw);
  }

  /**
   * A part of the peer's manifest (§6.3). Once whole it is compared with ours: equal, the pair
   * may form (or leave a mismatch); different, it decoheres with cause `register-mismatch`. A
   * sending that is not itself a reply is answered with ours, so each end learns the other's
   * verdict; ours is resent every keepalive until the peer says it holds it and found it equal.
   */
  private onManifest(now: number, m: ManifestMsg): void {
    const got = this.peerParts.accept(m);
    if (got.kind === 'pending') return;
    if (got.kind === 'invalid') {
      this.drop(now, 'malformed-payload', `manifest: ${got.detail}`);
      return;
    }
    this.peerEntries = got.entries;
    const diffs = diffManifests(this.manifest.entries, got.entries);
    this.peerHasOurs = diffs.length === 0 && (got.flags & MANIFEST_MATCHED) !== 0;
    if ((got.flags & MANIFEST_REPLY) === 0) this.manifestDue = { reply: true };
    this.judgeManifests(now, diffs);
  }

  /** A fragment (§3.4): the message it completes is handled as if it had come whole. */
  private onFragment(now: number, f: FragmentMsg): void {
    const before = this.fragIn.accepted;
    const raw = this.fragIn.onFragment(now, f);
    // Only a register with a reconciliation under way (active) waits for what the fragments carry.
    if (this.fragIn.accepted > before) for (const r of this.active.ordered()) r.peerDelivering(now);
    if (raw === undefined) return;
    let decoded;
    try {
      decoded = decodeMessages(raw);
    } catch (e) {
      if (!(e instanceof WireError)) throw e;
      return this.drop(now, DROP_REASON_NAMES[e.reason], `reassembled message ${f.msgId}: ${e.message}`);
    }
    const m = decoded.messages[0];
    if (decoded.unknown > 0 || decoded.messages.length !== 1) {
      return this.drop(now, 'unknown-message', `reassembled message ${f.msgId} is not one known message`);
    }
    // Only a register's message is ever too large for a payload: no nesting, no link messages, no manifest (its parts fit one).
    if (
      m.type === MsgType.Fragment ||
      m.type === MsgType.FragmentAck ||
      m.type === MsgType.Ack ||
      m.type === MsgType.Close ||
      m.type === MsgType.Manifest
    ) {
      return this.drop(now, 'malformed-payload', `reassembled message ${f.msgId} is a ${MsgType[m.type]}`);
    }
    this.dispatch(now, m, decoded.raws[0]);
  }

  private onAck(now: number, m: AckMsg): void {
    if (m.largestPn <= this.largestAcked) return;
    const slot = m.largestPn % PN_RING;
    // Only a packet we sent (and still remember) counts: an Ack naming a number from the
    // future would otherwise make every honest Ack after it look old (no RTT samples).
    if (this.sentPn[slot] !== m.largestPn) return;
    this.largestAcked = m.largestPn;
    // RFC 6298 / RFC 9002 §5: the sample excludes the peer's (bounded) ack delay.
    const sample = Math.max(0, now - this.sentAt[slot] - Math.min(m.ackDelayMs, this.timing.maxAckDelayMs));
    addRttSample(this.rtt, sample);
    this.backoff = 1;
  }

  rto(): number {
    const base =
      this.rtt.srtt === undefined ? this.timing.initialRtoMs : this.rtt.srtt + Math.max(4 * this.rtt.rttvar, 1) + this.timing.maxAckDelayMs;
    return Math.min(this.timing.maxRtoMs, Math.max(this.timing.minRtoMs, base) * this.backoff);
  }

  /**
   * Fire the due timers: silence first (the registers' timers then see the pair it left), then
   * each register's in register order, then the keepalive. One backoff step however many registers retransmitted.
   */
  handleTimeout(now: number): void {
    if (this.state === PairState.CLOSED) return;
    this.fireTimer(now, 'silence');
    let retransmitted = false;
    for (const r of this.active.ordered()) if (r.handleTimeout(now)) retransmitted = true; // a quiet one has no timer
    if (this.fireTimer(now, 'fragment')) retransmitted = true;
    if (retransmitted) {
      this.counters.retransmitTimeouts++;
      this.backoff = Math.min(this.backoff * 2, MAX_BACKOFF);
    }
    this.fireTimer(now, 'keepalive');
    this.fireTimer(now, 'ack');
    this.endStep(now);
  }

  /** Fire one of the link's timers if it is due; true if it was a retransmission. */
  private fireTimer(now: number, timer: LinkTimer): boolean {
    switch (timer) {
      case 'silence':
        if (this.silenceArmed() && now >= this.lastHeard + this.timing.silenceMs) {
          this.fire(now, LifecycleEvent.PeerSilent, `nothing heard for ${now - this.lastHeard} ms`);
        }
        return false;
      case 'keepalive':
        if (now >= this.lastKeepalive + this.timing.keepaliveMs) {
          this.lastKeepalive = now;
          for (const r of this.regList) r.markStatusDirty(); // the one step that visits (and wakes) every register
          if (!this.peerHasOurs) this.manifestDue ??= { reply: false };
          this.fragIn.evictStale(now);
        }
        return false;
      case 'ack':
        // pollTransmit sends a lone Ack once it is due; from now on it is owed without a deadline.
        if (this.ackDueAt !== undefined && now >= this.ackDueAt) {
          this.ackDueAt = undefined;
          this.ackOverdue = true;
        }
        return false;
      case 'fragment':
        // Fragments unacknowledged for an RTO are sent again (only those: §3.4).
        return this.fragOut.detectLost(now, this.rto());
      default: {
        const _unhandled: never = timer; // a timer added to LINK_TIMERS needs its case here
        return _unhandled;
      }
    }
  }

  /** The peer's silence counts only while the pair is up (or coming back). */
  private silenceArmed(): boolean {
    const st = this.state;
    return st === PairState.ENTANGLED || st === PairState.COLLAPSING || st === PairState.REENTANGLING;
  }

  /** Each armed timer's deadline (ms), in firing order; none when closed. */
  deadlines(): PairDeadline[] {
    const out: PairDeadline[] = [];
    if (this.state === PairState.CLOSED) return out;
    if (this.silenceArmed()) out.push({ timer: 'silence', at: this.lastHeard + this.timing.silenceMs });
    for (const r of this.active.ordered()) {
      const t = r.deadlines();
      for (const timer of Object.keys(t) as RegisterTimer[]) out.push({ timer, register: r.name, at: t[timer]! });
    }
    out.push({ timer: 'keepalive', at: this.lastKeepalive + this.timing.keepaliveMs });
    if (this.ackDueAt !== undefined) out.push({ timer: 'ack', at: this.ackDueAt });
    const frag = this.fragOut.deadline(this.rto());
    if (frag !== undefined) out.push({ timer: 'fragment', at: frag });
    return out;
  }

  /**
   * The next time handleTimeout must run (ms): the earliest deadline, or undefined when closed.
   * The minimum of deadlines() without building it: drivers ask after every step.
   */
  pollTimeout(): number | undefined {
    if (this.state === PairState.CLOSED) return undefined;
    // Between steps (drivers ask after each): the registers the step left quiet leave the active set.
    this.active.sweep();
    let t = this.lastKeepalive + this.timing.keepaliveMs; // always armed
    if (this.silenceArmed()) t = Math.min(t, this.lastHeard + this.timing.silenceMs);
    for (const r of this.active.ordered()) {
      const d = r.deadlines();
      for (const timer in d) {
        const at = d[timer as RegisterTimer]!;
        if (at < t) t = at;
      }
    }
    if (this.ackDueAt !== undefined && this.ackDueAt < t) t = this.ackDueAt;
    const frag = this.fragOut.deadline(this.rto());
    if (frag !== undefined && frag < t) t = frag;
    return t;
  }

  /**
   * Sequencer: collapse pending candidates without transmitting (no session to send on
   * yet). pollTransmit does this itself; the daemon calls this while the peer is unreachable.
   */
  collapse(now: number): void {
    if (this.state === PairState.CLOSED) return;
    if (this.replacedBatch !== 0 && this.replacedBatch <= this.durableBatch) {
      // A replaced register's records waited for its batch (§10.1): they apply now.
      this.replacedBatch = 0;
      this.drainCross(now);
      this.evaluate(now);
    }
    // While the ends' registers differ (a quota changed at one end, §6.3 rule 4), nothing is
    // decided: a record committed under a quota the peer does not hold could be refused there for
    // good. Candidates queued wait for the manifests to agree (no new one is taken meanwhile).
    if (this.mismatch) return;
    let made = 0;
    for (const r of this.active.ordered()) made += r.collapse(now); // a quiet one has nothing pending
    if (made > 0) this.evaluate(now);
    this.endStep(now);
  }

  /** The step ended: with a PairStore, make its writes durable, in order, before anything it caused can be polled. */
  private endStep(now: number): void {
    const store = this.opts.store;
    if (!store || this.writes.length === 0) return;
    const batch = this.writes;
    this.writes = [];
    try {
      persistWrites(store, batch);
      this.durableBatch = this.writeBatch++;
    } catch (e) {
      // As `writesFailed`: nothing of this step may be polled by a caller that catches and carries on.
      this.fence(now, `store failed: ${(e as Error).message}`);
      throw e;
    }
  }

  /**
   * True while some step's writes are not durable: datagrams and events wait (they may
   * carry or announce what those writes hold), and so does everything after them.
   */
  get awaitingWrites(): boolean {
    return this.writes.length > 0 || this.writesInFlight;
  }

  /**
   * The writes of the steps since the last call, in order (durability `driver`). The driver
   * makes them durable, in this order, then calls `writesDurable()`; until then the pair
   * releases no datagram and no event. Empty when there is nothing to write.
   */
  pollWrites(): PairWrite[] {
    if (this.writes.length === 0) return [];
    if (this.writesInFlight) throw new Error('pollWrites: the previous writes were not acknowledged (writesDurable)');
    const batch = this.writes;
    this.writes = [];
    this.writesInFlight = true;
    this.writeBatch++;
    return batch;
  }

  /** The writes last taken by `pollWrites` are durable: what their steps caused may leave. */
  writesDurable(): void {
    if (this.writesInFlight) this.durableBatch = this.writeBatch - 1;
    this.writesInFlight = false;
  }

  /**
   * The writes last taken (or still to take) could not be made durable: what their steps
   * committed must never be seen. The pair is fenced as by `fence` (cause `internal-error`,
   * detail `store failed: ...`); a restart reloads it from what is on disk.
   */
  writesFailed(now: number, detail: string): void {
    this.fence(now, `store failed: ${detail}`);
  }

  /** The next datagram to send, or undefined when there is nothing (call until undefined). */
  pollTransmit(now: number): Uint8Array | undefined {
    if (this.isFenced || this.awaitingWrites) return undefined;
    if (this.state === PairState.CLOSED) {
      if (this.closeQueued === undefined) return undefined;
      const reason = this.closeQueued;
      this.closeQueued = undefined;
      return this.frame(now, encodeMessage({ type: MsgType.Close, reason }));
    }
    this.collapse(now);
    if (this.awaitingWrites) return undefined; // the collapse made writes: they go to disk first
    this.txNow = now;
    const b = this.builder.reset();
    const ackPending = this.ackDueAt !== undefined || this.ackOverdue;
    if (ackPending) {
      b.addMessage({
        type: MsgType.Ack,
        largestPn: this.largestReceived,
        ackDelayMs: Math.max(0, Math.round(now - this.largestReceivedAt)),
      });
    }
    // Fragment acknowledgements ride with the Ack (they are owed only after fragments arrived).
    let fragAcks = 0;
    if (ackPending) {
      for (const a of this.fragIn.pendingAcks()) {
        if (!b.addMessage(a)) break;
        fragAcks++;
      }
    }
    const ackOnly = b.room;
    if (this.manifestDue) {
      const flags = (this.peerManifest === 'match' ? MANIFEST_MATCHED : 0) | (this.manifestDue.reply ? MANIFEST_REPLY : 0);
      this.manifestOut = this.manifest.messages(flags); // a newer sending replaces parts not sent yet
      this.manifestDue = undefined;
    }
    while (this.manifestOut.length > 0 && b.addMessage(this.manifestOut[0])) this.manifestOut.shift();
    while (this.outbox.length > 0) {
      const m = this.outbox[0];
      const raw = this.outboxRaw.get(m) ?? encodeMessage(m);
      if (!b.add(raw, largeKey(m))) {
        // A response larger than a payload went to the fragmentation layer; false here is a full one, or a full payload.
        // A large one is kept encoded: a full queue refuses it on every datagram until it has room.
        if (raw.length > this.maxPayload) this.outboxRaw.set(m, raw);
        break;
      }
      this.outbox.shift();
    }
    // While the registers differ, only the manifest goes out (§6.3).
    const regs = this.mismatch ? NO_REGISTERS : this.active.ordered();
    // The Ack's deadline came: Statuses owed lazily go with it (§9.1).
    const ackDue = this.ackOverdue || (this.ackDueAt !== undefined && now >= this.ackDueAt);
    // Round robin over the registers: the first to fill is the next in register order from `rr`
    // (a quiet register would add nothing). `n` is fixed: one woken by another's fill was quiet.
    const n = regs.length;
    let first = 0;
    while (first < n && regs[first].index < this.rr) first++;
    for (let i = 0; i < n; i++) regs[(first + i) % n].fill(now, b, ackDue);
    this.rr = (this.rr + 1) % Math.max(1, this.mismatch ? 0 : this.regList.length);
    // Fragments of large messages take the room the registers left, within their window.
    for (let f = this.fragOut.next(now, b.room); f; f = this.fragOut.next(now, b.room)) b.addMessage(f);
    if (b.empty) return undefined;
    if (b.room === ackOnly && this.ackDueAt !== undefined && now < this.ackDueAt) return undefined; // an ack alone waits for its deadline
    // The datagram goes: Statuses owed lazily ride it where they fit (§9.1). One that does not goes in the next
    // datagram, now: waiting another maxAckDelayMs would hold it past the deadline the peer's RTO allows for.
    for (let i = 0; i < n; i++) if (!regs[i].fillOwedStatus(b)) regs[i].markStatusDirty();
    this.fragIn.acksSent(fragAcks);
    if (ackPending) this.ackNamed = true;
    this.ackDueAt = undefined;
    this.ackOverdue = false;
    const sealer = this.opts.sealer;
    if (sealer?.sealInPlace) {
      // Joined once behind room for the header and before room for the tag, sealed where it lies.
      const out = b.finish(HEADER_LEN, sealer.tailroom ?? 0);
      return this.sent(now, sealer.sealInPlace(out), out);
    }
    if (sealer) return this.frame(now, b.finish());
    // Unsealed: the payload is joined behind room for the header, written in place (no second copy).
    const out = b.finish(HEADER_LEN);
    const pn = this.nextPn++;
    writeFrameHeader(out, { type: FrameType.Data, flags: 0, pairId: this.opts.pairId, packetNumber: pn });
    return this.sent(now, pn, out);
  }

  private frame(now: number, payload: Uint8Array): Uint8Array {
    let out: Uint8Array;
    let pn: number;
    if (this.opts.sealer) ({ frame: out, packetNumber: pn } = this.opts.sealer.seal(payload));
    else {
      pn = this.nextPn++;
      out = encodeFrame({ type: FrameType.Data, flags: 0, pairId: this.opts.pairId, packetNumber: pn }, payload);
    }
    return this.sent(now, pn, out);
  }

  /** Count a datagram leaving under packet number `pn`. */
  private sent(now: number, pn: number, out: Uint8Array): Uint8Array {
    this.sentPn[pn % PN_RING] = pn;
    this.sentAt[pn % PN_RING] = now;
    this.counters.datagramsSent++;
    this.counters.bytesSent += out.length;
    if (this.state === PairState.REENTANGLING) this.counters.reentangleBytes += out.length;
    return out;
  }

  /** Registers in the active set (the rest are quiet: the steps skip them). */
  get activeRegisters(): number {
    return this.active.size;
  }

  /**
   * The active set checked against every register (simulators, after each step): errors, empty when
   * sound. A register outside it that is not quiet was changed without a wake.
   */
  audit(): string[] {
    return this.active.audit((r) => `pair ${this.opts.pairId} (member ${this.opts.localId}) register ${r.name}`);
  }

  /** The next event, or undefined (call until undefined); none while some step's writes are not durable. */
  pollEvent(): SpookEvent | undefined {
    if (this.awaitingWrites) return undefined;
    return this.events.shift();
  }

  /** Close the pair for good: a Close message goes out on the next pollTransmit. */
  close(now: number, reason = 'closed locally'): void {
    if (this.state === PairState.CLOSED) return;
    this.fire(now, LifecycleEvent.Close, reason);
    this.closeQueued = CloseReason.Closed;
  }

  /**
   * The driver caught an exception while handling this pair (or its store failed): decohere
   * with cause `internal-error`. The driver stops driving the pair; this records it, tells
   * watchers, and from then on the pair sends nothing.
   */
  fence(now: number, detail: string): void {
    // Nothing of the step that failed (or of any step whose writes are not durable) may be
    // seen: its writes, responses, datagrams and events are dropped; only the fence's own
    // lifecycle event is released.
    this.isFenced = true;
    this.writes = [];
    this.writesInFlight = false;
    this.outbox = [];
    this.closeQueued = undefined;
    while (this.events.shift() !== undefined);
    if (this.lifecycle.can(LifecycleEvent.InternalError)) this.fire(now, LifecycleEvent.InternalError, detail);
  }

  /**
   * This endpoint is stopping and will come back (daemon shutdown): tell the peer so it
   * decoheres at once. The pair itself is not closed; its state is on disk.
   */
  goingAway(now: number): Uint8Array | undefined {
    if (this.state === PairState.CLOSED) return undefined;
    return this.frame(now, encodeMessage({ type: MsgType.Close, reason: CloseReason.GoingAway }));
  }

  // ------------------------------------------------------------------ lifecycle

  private fire(now: number, event: LifecycleEvent, cause: string): void {
    const from = this.lifecycle.fire(now, event);
    this.emit({ type: 'lifecycle', at: now, from, to: this.lifecycle.state, cause: `${event}: ${cause}` });
  }

  /** A register found divergence or an unfillable gap while the peer is reachable: decohere, then re-entangle at once. */
  private trigger(now: number, event: LifecycleEvent, detail: string): void {
    if (!this.lifecycle.can(event)) return;
    this.fire(now, event, detail);
    this.fire(now, LifecycleEvent.PeerHeard, 'peer reachable; re-entangling');
    for (const r of this.regList) r.beginReentangle();
  }

  /** Move the lifecycle as far as the registers' progress allows. */
  private evaluate(now: number): void {
    // Forming and re-entangling look at every register; once up, a quiet (inactive) register is settled.
    const regs = this.regList;
    switch (this.state) {
      case PairState.FORMING: {
        // Forming needs the peer's manifest, equal to ours (§6.3), and every register's Status.
        if (this.peerManifest !== 'match') return;
        if (!regs.every((r) => r.peerHash !== undefined)) return;
        const same = regs.every(
          (r) => r.peerVersion === r.version && r.peerHash!.hi === r.hash.hi && r.peerHash!.lo === r.hash.lo && !r.reconciling,
        );
        if (same) this.fire(now, LifecycleEvent.FormedAligned, "every register at the peer's (version, hash)");
        else {
          this.fire(now, LifecycleEvent.FormedMisaligned, "registers differ from the peer's");
          for (const r of regs) r.beginReentangle();
        }
        return this.evaluate(now);
      }
      case PairState.REENTANGLING:
        // Aligned only with a peer whose current manifest matched ours (it may have restarted since).
        if (this.peerManifest !== 'match' || !regs.every((r) => r.aligned())) return;
        for (const r of regs) r.finishReentangle(now);
        this.counters.reentanglements++;
        this.fire(now, LifecycleEvent.Aligned, 'every register re-entangled');
        return this.evaluate(now);
      case PairState.ENTANGLED:
        if (!this.active.ordered().every((r) => r.settled())) this.fire(now, LifecycleEvent.CollapseStarted, 'collapse in flight');
        return;
      case PairState.COLLAPSING:
        if (this.active.ordered().every((r) => r.settled()))
          this.fire(now, LifecycleEvent.CollapseSettled, 'peer confirmed every collapse');
        return;
      default:
        return;
    }
  }

  private emit(ev: SpookEvent): void {
    if (this.events.length >= EVENT_LIMIT) {
      this.events.shift();
      this.counters.eventsDropped++;
    }
    this.events.push(ev);
  }

  private drop(now: number, reason: PairDrop, detail: string, n = 1): void {
    this.counters.drops[reason] = (this.counters.drops[reason] ?? 0) + n;
    this.emit({ type: 'drop', at: now, reason, detail });
  }
}
