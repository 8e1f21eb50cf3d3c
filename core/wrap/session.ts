/**
 * WrapSession: the sans-I/O core of wrapping between this spookd and one peer (PROTOCOL §16).
 *
 * It owns every wrapped connection to or from that peer: the two stream registers of each,
 * the hold timer that keeps them alive while the carrier is down, and resumption (each side
 * tells the other how much of each stream it already holds, and only the rest is resent).
 * Inputs are local socket events, carrier records and timeouts, each with `now` first (the
 * session keeps no clock of its own); outputs are records for the carrier (pollRecord), events
 * for the I/O layer (pollEvent: dial, deliver, end, close, writable) and the next deadline of
 * its named timers (pollTimeout, then handleTimeout(now)). No I/O here.
 */
import {
  CloseCode,
  CLOSE_NAMES,
  DATA_HEADER_LEN,
  decodeDataHeader,
  decodeRecord,
  encodeDataHeader,
  encodeRecord,
  MAX_DATA,
  OPEN_DATAGRAM,
  OPEN_DELTA,
  RecordType,
  WRAP_VERSION,
  type Target,
  type WrapRecord,
} from '../../wire/wrap.js';
import { RecvStream, SendStream } from './stream.js';
import { Deque } from '../util/deque.js';
import { Chunker, ChunkLru, digestKey, type Chunk } from './dedup.js';
import { frameDatagram, MAX_DATAGRAM, UDP_IDLE_MS, type FlowDrop } from './udp.js';
import type { HandoverConn, HandoverPeer } from './handover.js';
import { MAX_HOLD_MS } from './hold.js';
import { slotRefusal, type SlotRefusal } from './admission.js';

export interface WrapSessionOptions {
  /** Low bit of the connection ids this side opens (the peers pick opposite bits). */
  role: 0 | 1;
  /** A fresh random id per daemon start: a peer that sees it change knows our state is gone. */
  bootId: bigint;
  /** Per-stream window: bytes buffered for resending, and bytes in flight to a slow reader. */
  windowBytes: number;
  /** Most live connections with this peer; more are refused (too-many-connections). */
  maxConnections: number;
  pingMs: number;
  /** The carrier is declared lost after this long without a record from the peer. */
  silenceMs: number;
  /** Delta mode's chunk memory per peer, each side (default CACHE_BYTES; both ends should agree). */
  deltaCacheBytes?: number;
  /**
   * The serving side's dial policy (§16.5.1): may the peer make this side dial `target`?
   * Absent: nothing is dialled (default deny).
   */
  mayDial?: (target: Target, datagram: boolean) => boolean;
  /**
   * Whether this side may take one more connection the peer opens (its dial costs a descriptor):
   * false, it is refused as one past maxConnections. Absent: only maxConnections applies.
   */
  mayOpen?: () => boolean;
  /**
   * Per peer and direction, all connections together: bytes read and not yet acknowledged
   * by the peer, and bytes received and not yet taken by the local sockets (§16.5.5).
   * Default DEFAULT_MAX_BUFFERED (never below windowBytes).
   */
  maxBufferedBytes?: number;
  /** A UDP flow this side opened that carried nothing for this long is ended (default UDP_IDLE_MS). */
  udpIdleMs?: number;
}

export const DEFAULT_MAX_BUFFERED = 64 * 1024 * 1024;
/** A connection paused by the per-peer quota is woken for this much room (one socket read). */
const WAKE_BYTES = 64 * 1024;

export const ACK_DELAY_MS = 5;
/** A handed-over send stream may pass the window by what the last socket reads added (localData takes a whole read). */
const HANDOVER_SLACK = 1 << 20;
/**
 * Delta mode holds the unfinished last chunk of a burst this long for more bytes: sent at
 * once, its start would go raw and the whole chunk could never be a reference.
 */
export const DELTA_TAIL_MS = 2;

/**
 * The session's timers (as quinn-proto's connection/timer.rs): each has a deadline (`deadlines`),
 * pollTimeout() is the earliest, and handleTimeout(now) fires the due ones in this order.
 * - silence: no record from the peer for silenceMs: the carrier is dropped;
 * - ping: nothing sent for pingMs: a PING (the peer's silence timer runs on our records);
 * - ack: a drained offset waited ACK_DELAY_MS: its ACK is queued;
 * - hold: a connection's hold ran out with the carrier down: closed with hold-expired;
 * - flow-idle: a UDP flow this side opened carried nothing for udpIdleMs: its stream ends;
 * - delta-tail: delta mode's unfinished last chunk waited DELTA_TAIL_MS: it goes out raw with the
 *   next pollRecord (firing does nothing else);
 * - coalesce: a record held back to leave in the same carrier write as others (§16.5.1)
 *   waited ACK_DELAY_MS: a deferred OPEN, a delayed OPENED.
 */
export const WRAP_TIMERS = ['silence', 'ping', 'ack', 'hold', 'flow-idle', 'delta-tail', 'coalesce'] as const;
export type WrapTimer = (typeof WRAP_TIMERS)[number];

export type ConnState = 'opening' | 'open' | 'held';

export interface WrapConn {
  id: number;
  /** This side accepted the client (and sent OPEN), or the peer did (and we dial the server). */
  local: boolean;
  wrapPort: number;
  target: Target;
  holdMs: number;
  state: ConnState;
  send: SendStream;
  recv: RecvStream;
  openSent: boolean;
  /** While the carrier is down: close when this passes. */
  holdUntil: number | undefined;
  heldSince: number | undefined;
  outages: number;
  openedAt: number;
  /** UDP flows: when a datagram last went either way (the flow-idle timer). */
  lastActivity: number;
  /** Delta mode (§16.9): chunks of each direction, references to chunks the peer holds. */
  delta: DeltaState | undefined;
  /** A UDP flow (§16.10): the streams carry length-prefixed datagrams. */
  datagram: boolean;
  /**
   * The peer's connections: the carrier (counters.carrierUps) on which its OPEN or RESUME for
   * this id last came. An honest peer resends OPEN once per carrier, ahead of its RESUME, so an
   * OPEN after either on the same carrier is a second connection under a live id.
   */
  peerCarrier: number;
  /** A local connection's user (the uid the hooks recorded), counted in slotsOf(); undefined when not known. */
  uid: number | undefined;
}

interface DeltaState {
  sendChunker: Chunker;
  /** Completed chunks of the send stream not yet wholly on the carrier, in order. */
  sendChunks: Deque<Chunk>;
  /** No references below this offset (bytes resent after a loss or a NACK go raw). */
  rawUntil: number;
  recvChunker: Chunker;
  /** A NACK is outstanding for this offset: later records are dropped until the resend. */
  nackAt: number | undefined;
  /** When unsent bytes last appeared after everything had been sent (the tail waits DELTA_TAIL_MS from then). */
  lastAppend: number;
}

export type WrapEvent =
  | { type: 'dial'; conn: number; target: Target; wrapPort: number; datagram: boolean }
  | { type: 'deliver'; conn: number; data: Uint8Array }
  | { type: 'end'; conn: number }
  | { type: 'writable'; conn: number }
  | { type: 'close'; conn: number; code: CloseCode; reason: string; byPeer: boolean }
  | { type: 'held'; conn: number }
  /** The far side connected a connection this side opened (its first OPENED): its connect timeout is over. */
  | { type: 'opened'; conn: number }
  | { type: 'resumed'; conn: number; heldMs: number }
  | { type: 'done'; conn: number }
  /** `detail` is the operator's text (the carrier's close reason). */
  | { type: 'drop-carrier'; reason: CarrierDrop; detail: string }
  /** The per-peer quota of buffered bytes is used up: stop reading every local endpoint of this peer. */
  | { type: 'pause-all' }
  | { type: 'peer-restarted' }
  | { type: 'violation'; kind: WrapViolation; detail: string };

/** What a session counts (`spook wrap stats`, metrics). */
export interface WrapSessionCounters {
  recordsIn: number;
  recordsOut: number;
  /** Records of the peer against the protocol (each also a `violation` event). */
  violations: number;
  /** DATA or REF past our receive window or quota (a violation too). */
  windowViolations: number;
  carrierUps: number;
  carrierLosses: number;
  /** Delta mode: REFs sent, the stream bytes they stood for, REFs expanded here, NACKs sent. */
  refsSent: number;
  refBytes: number;
  refsExpanded: number;
  nacksSent: number;
}

/**
 * What a peer did against the protocol (each counted in `violations`): a record that does not
 * decode, comes before HELLO, repeats HELLO or speaks another version; an OPEN with this side's
 * id parity, or of id 0 or with a port of 0, or for a live connection that is not a resend of
 * its OPEN (`open`, that connection reset), or an OPENED for the peer's own connection;
 * a record about a stream at an impossible offset (`stream`, the connection reset) or past the
 * receive window or quota (`window`); in delta mode, a NACK of octets already resent raw
 * (`nack`, ignored); replies it leaves unread until the silence timeout (`unread`) or past the
 * backlog limit (`control-backlog`).
 */
export type WrapViolation =
  | 'undecodable'
  | 'before-hello'
  | 'second-hello'
  | 'version'
  | 'parity'
  | 'open'
  | 'wrong-side'
  | 'stream'
  | 'window'
  | 'nack'
  | 'unread'
  | 'control-backlog';

/** Why the session drops its carrier: a peer of another WRAP version, replies it never reads, its silence. */
export type CarrierDrop = 'version' | 'control-backlog' | 'silence';

const RECENT_CLOSED = 1024;
/**
 * Control records owed to the peer (§16.2): past CONTROL_PAUSE_RECORDS + 4 × maxConnections
 * the I/O layer stops reading the carrier until they drain (`backlogged`); at twice that the
 * carrier is dropped (an I/O layer that keeps reading). Most are replies to the peer's own
 * records, which only pile up while it does not read ours. Honest bursts stay below (a new
 * carrier may queue OPEN, RESUME, one ACK and CLOSE per connection), or two honest sides could
 * stop reading each other at once. A record is at most ~300 bytes.
 */
export const CONTROL_PAUSE_RECORDS = 4096;

/** A queued control record: encoded bytes, or an ACK encoded when sent (its offset may still move). */
interface ControlEntry {
  rec?: Uint8Array;
  ack?: { conn: number; offset: number };
  /** It answers a peer's record about this connection id (at most one such answer each). */
  answers?: number;
}

export class WrapSession {
  private readonly live = new Map<number, WrapConn>();
  private nextId: number;
  private carrier = false;
  private peerHello = false;
  private peerBootId: bigint | undefined;
  /** Control records in order; an ACK is encoded when sent, so a newer one updates it in place. */
  private control = new Deque<ControlEntry>();
  /**
   * The ACK still queued per connection: a later ACK moves its offset instead of queueing
   * another, so a stalled carrier holds at most one ACK per connection (an honest side that
   * keeps draining its sockets never fills the backlog with its own ACKs).
   */
  private readonly ackQueued = new Map<number, { conn: number; offset: number }>();
  /** Past this many control records, stop reading the carrier; at twice, drop it. */
  readonly controlPause: number;
  /** A PING was received and its PONG not yet sent: one PONG answers any number of them. */
  private pongDue = false;
  /**
   * Connection ids with an answer to a peer's record about them still queued (CLOSE for an
   * unknown or refused id, a late FIN and ACK, OPENED to a resent OPEN): at most one each.
   */
  private readonly answering = new Set<number>();
  private readonly events: WrapEvent[] = [];
  /**
   * Recently ended connections, to answer a late RESUME with the real reason, or, for one that
   * completed, with the FIN and ACK the peer may have lost with the carrier.
   */
  private readonly recentClosed = new Map<number, CloseCode | { finOut: number; finIn: number }>();
  /**
   * Connections whose drained offset moved, with when it first did. ACKs are delayed (at most
   * ACK_DELAY_MS, or until an eighth of the window is drained): an ACK per delivery would
   * double the records of an interactive exchange and sit on its round trip.
   */
  private readonly ackDirty = new Map<number, number>();
  /**
   * Held back so that they leave in one carrier write with the records that follow them
   * (a connection's set-up is then one write each way, not two; §16.5.1), each at most
   * ACK_DELAY_MS (the coalesce timer): client side, connections whose OPEN waits for their
   * first bytes (announceDeferred(), or localData); server side, dialled connections whose
   * OPENED waits for their first DATA, FIN or ACK (by id, since when). (A completed
   * connection's last ACK is not delayed: a handover in the meantime would forget it.)
   */
  private readonly openDeferred = new Set<number>();
  private readonly openedDue = new Map<number, number>();
  private lastHeard = 0;
  private lastSent = 0;
  /**
   * Connections with something to send (sendable()), in round-robin order: a connection goes to
   * the back when it sends. nextData visits these, not every connection, so a record or a flush
   * costs the same with one connection or a thousand idle ones (kept by SendStream's change hook).
   */
  private readonly sendQueue = new Set<WrapConn>();
  /** Sum of the live connections' send.inFlight: what the peer may hold for all of them (its quota, §16.5.5). */
  private sendInFlight = 0;
  /** Connections holding through an outage (holdUntil set): the hold timer's only candidates. */
  private readonly holding = new Set<WrapConn>();
  /** Our UDP flows not ended yet, least recently active first (a flow goes to the back on activity): the flow-idle timer's. */
  private readonly flows = new Set<WrapConn>();
  private readonly count: WrapSessionCounters = {
    recordsIn: 0,
    recordsOut: 0,
    violations: 0,
    windowViolations: 0,
    carrierUps: 0,
    carrierLosses: 0,
    refsSent: 0,
    refBytes: 0,
    refsExpanded: 0,
    nacksSent: 0,
  };
  private outBytes = 0;
  private inBytes = 0;
  readonly maxBuffered: number;
  /** What the peer's HELLO advertised (ours until then): its receive window and quota. */
  private peerWindow: number;
  private peerBuffer: number;
  /** Connections paused by the per-peer quota (not their own window), woken as it frees. */
  private readonly blocked = new Set<number>();
  /**
   * Live local connections per user (uid), for the reserve of slotRefusal(): an entry only while
   * its user has one, so it never holds more users than maxConnections.
   */
  private readonly byUid = new Map<number, number>();
  /** Delta mode: chunks this side sent (or referenced) to the peer, and chunks it received. */
  private readonly refIndex: ChunkLru<true>;
  private readonly refCache: ChunkLru<Uint8Array>;
  private readonly udpIdleMs: number;
  /** The timers' deadlines, refilled by scanDeadlines(). */
  private readonly due: Record<WrapTimer, number | undefined> = {
    silence: undefined,
    ping: undefined,
    ack: undefined,
    hold: undefined,
    'flow-idle': undefined,
    'delta-tail': undefined,
    coalesce: undefined,
  };

  constructor(private readonly opts: WrapSessionOptions) {
    this.nextId = 2 + opts.role;
    this.controlPause = CONTROL_PAUSE_RECORDS + 4 * opts.maxConnections;
    this.maxBuffered = Math.max(opts.windowBytes, opts.maxBufferedBytes ?? DEFAULT_MAX_BUFFERED);
    this.peerWindow = opts.windowBytes;
    this.peerBuffer = this.maxBuffered;
    this.refIndex = new ChunkLru(opts.deltaCacheBytes);
    this.refCache = new ChunkLru(opts.deltaCacheBytes);
    this.udpIdleMs = opts.udpIdleMs ?? UDP_IDLE_MS;
  }

  /** The live connections, by id (read-only here: every change is an input). */
  get conns(): ReadonlyMap<number, Readonly<WrapConn>> {
    return this.live;
  }

  get counters(): Readonly<WrapSessionCounters> {
    return this.count;
  }

  /** Bytes read from local sockets, not yet acknowledged by the peer (all connections). */
  get bufferedOut(): number {
    return this.outBytes;
  }

  /** Bytes received from the peer, not yet taken by the local sockets (all connections). */
  get bufferedIn(): number {
    return this.inBytes;
  }

  get carrierUp(): boolean {
    return this.carrier;
  }

  /** Control records are piling up (the peer does not read them): stop reading its records until they drain. */
  get backlogged(): boolean {
    return this.control.length >= this.controlPause;
  }

  /** Control records queued for the carrier (a PONG due counts as one). */
  get controlQueued(): number {
    return this.control.length + (this.pongDue ? 1 : 0);
  }

  // ---- local side ----

  /**
   * A client connection was intercepted: returns its id, or undefined when over the limit.
   * `deferOpen`: its OPEN waits for its first bytes (or the end of its stream), for the I/O
   * layer's announceDeferred() or for ACK_DELAY_MS, whichever comes first, so that OPEN and
   * the first DATA leave in one carrier write (a TCP client usually writes as soon as it is
   * connected, and the bytes come in the event loop's next poll).
   */
  openLocal(
    now: number,
    wrapPort: number,
    target: Target,
    holdMs: number,
    delta = false,
    datagram = false,
    deferOpen = false,
    uid?: number,
  ): number | undefined {
    if (this.live.size >= this.opts.maxConnections) return undefined;
    const id = this.takeId();
    if (id === undefined) return undefined;
    // Delta mode's tail wait would delay every datagram: flows never use it.
    const c = this.newConn(now, id, true, wrapPort, target, holdMs, delta && !datagram, datagram);
    if (uid !== undefined) {
      c.uid = uid;
      this.byUid.set(uid, (this.byUid.get(uid) ?? 0) + 1);
    }
    if (!this.carrier || !this.peerHello) this.hold(now, c);
    else if (deferOpen) this.openDeferred.add(id);
    else this.sendOpen(now, c);
    return id;
  }

  /**
   * Whether a new local connection of user `uid` (undefined: not known) would find a slot with
   * the peer: undefined if so, else why not (slotRefusal: the limit, and the reserve kept for
   * users holding less than half of the slots). openLocal() enforces only the limit.
   */
  slotRefusal(uid: number | undefined): SlotRefusal | undefined {
    return slotRefusal(this.opts.maxConnections, this.live.size, uid === undefined ? undefined : this.slotsOf(uid));
  }

  /** The live connections user `uid` opened through this side (each holds a slot until released). */
  slotsOf(uid: number): number {
    return this.byUid.get(uid) ?? 0;
  }

  /** Users holding slots (one entry per user with a live connection: never more than the connections). */
  get slotUsers(): number {
    return this.byUid.size;
  }

  /**
   * The next free id of this side's parity. The counter wraps at 2^32 and a handover carries it
   * across restarts, so after 2^31 opens it meets ids still in use: one live (the peer would
   * take our OPEN for a resent one and hand the new client's bytes to the old server) or still
   * remembered as ended (a late record of the old one would be answered for the new). Those are
   * skipped; of live.size + recentClosed.size + 1 candidates one is free, unless the id space
   * (2^31 - 1 ids) is used up.
   */
  private takeId(): number | undefined {
    for (let tries = this.live.size + this.recentClosed.size + 1; tries > 0; tries--) {
      const id = this.nextId;
      this.nextId = (id + 2) >>> 0 || 2 + this.opts.role; // modulo 2^32, skipping 0 (§16.4)
      if (!this.live.has(id) && !this.recentClosed.has(id)) return id;
    }
    return undefined;
  }

  /** Send the OPENs deferred by openLocal (the I/O layer's next poll has handed over what the clients wrote). */
  announceDeferred(now: number): void {
    for (const id of this.openDeferred) this.announce(now, id);
  }

  /** A deferred OPEN goes now, if the carrier is up (else the next HELLO announces the connection). */
  private announce(now: number, id: number): void {
    const c = this.live.get(id);
    if (!c || c.openSent || !this.carrier || !this.peerHello) {
      this.openDeferred.delete(id);
      return;
    }
    this.sendOpen(now, c);
  }

  /** Bytes read from the local socket. Returns false when the window is full: pause reading. */
  localData(now: number, conn: number, data: Uint8Array): boolean {
    const c = this.live.get(conn);
    if (!c || c.send.ended) return false; // after the local end nothing more can be appended
    if (this.openDeferred.has(conn)) this.announce(now, conn); // OPEN first, its DATA right behind it
    const idle = c.send.next >= c.send.end;
    c.send.append(data);
    this.outBytes += data.length;
    if (c.datagram) this.active(now, c);
    if (c.delta) {
      for (const ch of c.delta.sendChunker.push(data)) c.delta.sendChunks.push(ch);
      // The wait runs from the first unsent byte, so a steady trickle is never held longer.
      if (idle) c.delta.lastAppend = now;
    }
    if (c.send.room === 0) return false;
    if (this.outBytes < this.maxBuffered) return true;
    // The per-peer quota is used up: every connection stops reading (not just this one, or
    // each would still add a read), and they are woken one read's worth at a time.
    for (const id of this.live.keys()) this.blocked.add(id);
    this.events.push({ type: 'pause-all' });
    return false;
  }

  /**
   * A datagram from the local end of a UDP flow, framed into its stream; or why it was dropped
   * (UDP's contract: a datagram that does not fit the window is lost, never queued without bound).
   */
  localDatagram(now: number, conn: number, d: Uint8Array): FlowDrop | undefined {
    if (d.length > MAX_DATAGRAM) return 'too-big';
    const framed = frameDatagram(d);
    if (this.live.get(conn)?.send.ended) return 'flow-ended';
    if (this.room(conn) < framed.length) return 'window-full';
    this.localData(now, conn, framed);
    return undefined;
  }

  /** Bytes the window and the per-peer quota still take for `conn` (a UDP flow drops a datagram that does not fit). */
  room(conn: number): number {
    return Math.min(this.live.get(conn)?.send.room ?? 0, Math.max(0, this.maxBuffered - this.outBytes));
  }

  /** The local end finished its stream (a TCP FIN); `now` unused: ending queues nothing by itself. */
  localEnd(now: number, conn: number): void {
    const c = this.live.get(conn);
    if (!c) return;
    if (this.openDeferred.has(conn)) this.announce(now, conn);
    c.send.finish();
    this.flows.delete(c); // ended: no idle timer
  }

  /** A datagram went either way on flow `c`: its idle timer starts again (to the back of `flows`). */
  private active(now: number, c: WrapConn): void {
    c.lastActivity = now;
    if (this.flows.delete(c)) this.flows.add(c);
  }

  /** The local socket failed or was reset: the peer resets its side too. */
  localReset(now: number, conn: number, text: string): void {
    const c = this.live.get(conn);
    if (!c) return;
    this.forget(now, c, c.local ? CloseCode.ClientReset : CloseCode.ServerReset, text, false, false);
  }

  /** The local socket flushed `n` more bytes of what `deliver` handed it. */
  drained(now: number, conn: number, n: number): void {
    const c = this.live.get(conn);
    if (!c) return;
    const drained = Math.min(c.recv.received, c.recv.drained + n);
    this.inBytes -= drained - c.recv.drained;
    c.recv.drained = drained;
    this.maybeDone(now, c);
  }

  dialed(now: number, conn: number): void {
    const c = this.live.get(conn);
    if (!c || c.local) return;
    if (c.state === 'opening') c.state = this.carrier ? 'open' : 'held';
    // Delayed (at most ACK_DELAY_MS) to leave with the server's first bytes or the first ACK,
    // in one carrier write (§16.5.1); a carrier lost meanwhile: the client side's resent OPEN is answered.
    if (this.carrier && this.peerHello) this.openedDue.set(conn, now);
  }

  /** The delayed OPENED of `c`, if any, joins the control queue now (ahead of what follows it). */
  private releaseOpened(now: number, c: WrapConn): void {
    if (this.openedDue.delete(c.id)) this.queue(now, { type: RecordType.Opened, conn: c.id });
  }

  dialFailed(now: number, conn: number, text: string): void {
    const c = this.live.get(conn);
    if (c) this.forget(now, c, CloseCode.DialFailed, text, false, true);
  }

  /** Close every connection (daemon stopping, wrapper removed). */
  closeAll(now: number, code: CloseCode, text: string, filter: (c: WrapConn) => boolean = () => true): void {
    for (const c of [...this.live.values()]) if (filter(c)) this.forget(now, c, code, text, false, true);
  }

  // ---- handover (a restart of this spookd, core/wrap/handover.ts) ----

  /**
   * What the next process needs to RESUME the connections `at` names a descriptor for (the
   * caller closed the others first), with the carrier down. `at(c).received`: how much of the
   * peer's stream the socket's kernel holds (between drained and received: bytes still queued
   * in this process die with it, and the peer resends them to the next one).
   */
  exportHandover(now: number, peer: string, at: (c: Readonly<WrapConn>) => { fd: number; received: number } | undefined): HandoverPeer {
    const conns: HandoverConn[] = [];
    for (const c of this.live.values()) {
      const h = at(c);
      if (!h || c.delta || c.datagram || h.received < c.recv.drained || h.received > c.recv.received) continue;
      conns.push({
        id: c.id,
        local: c.local,
        openSent: c.openSent,
        state: c.state,
        wrapPort: c.wrapPort,
        target: c.target,
        holdMs: c.holdMs,
        heldMs: c.heldSince !== undefined ? now - c.heldSince : 0,
        fd: h.fd,
        sendAcked: c.send.acked,
        sendBytes: c.send.unacked(),
        sendFin: c.send.finAt !== undefined,
        received: h.received,
        recvFinAt: c.recv.finAt,
        // The end was handed to the socket after its last byte: not delivered if bytes before it were lost.
        endDelivered: c.recv.endDelivered && h.received === c.recv.received,
        // Its user keeps the slot in the next process (without it, that user could take the reserve too).
        ...(c.uid !== undefined ? { uid: c.uid } : {}),
      });
    }
    // Completed ones too: the peer may still lack our last ACK, and RESUME for them (§16.5.6).
    const completed: { id: number; finOut: number; finIn: number }[] = [];
    for (const [id, end] of this.recentClosed) if (typeof end === 'object') completed.push({ id, ...end });
    return { peer, peerBootId: this.peerBootId, nextId: this.nextId, conns, completed };
  }

  /**
   * Connections handed over by the previous process (same bootId), before the first carrier:
   * each is held (its hold counts the time it was held already) and RESUMEs at the next HELLO.
   * Returns the ids taken; a connection over this session's limits (count, per-peer quota) or
   * with an id in use is left out, for the caller to reset.
   */
  importHandover(now: number, h: HandoverPeer): Set<number> {
    const taken = new Set<number>();
    if (this.peerBootId === undefined) this.peerBootId = h.peerBootId;
    for (const x of h.completed ?? []) if (!this.live.has(x.id)) this.remember(x.id, { finOut: x.finOut, finIn: x.finIn });
    for (const x of h.conns) {
      if (this.live.has(x.id) || this.live.size >= this.opts.maxConnections) continue;
      if (this.outBytes + x.sendBytes.length > this.maxBuffered || x.sendBytes.length > this.opts.windowBytes + HANDOVER_SLACK) continue;
      const c = this.newConn(now, x.id, x.local, x.wrapPort, x.target, x.holdMs, false, false);
      c.state = x.state;
      c.openSent = x.openSent;
      c.send.restore(x.sendAcked, x.sendBytes, x.sendFin);
      this.outBytes += x.sendBytes.length;
      c.recv.received = c.recv.drained = x.received;
      c.recv.finAt = x.recvFinAt;
      c.recv.endDelivered = x.endDelivered;
      if (x.local && x.uid !== undefined) {
        c.uid = x.uid;
        this.byUid.set(x.uid, (this.byUid.get(x.uid) ?? 0) + 1);
      }
      this.hold(now, c);
      const credit = Math.min(x.heldMs, c.holdMs);
      c.holdUntil = now + c.holdMs - credit;
      c.heldSince = now - credit;
      taken.add(x.id);
    }
    // New ids continue past every handed-over one (the peer may still know the old ones).
    let next = h.nextId >>> 0;
    for (const id of this.live.keys()) if ((id & 1) === this.opts.role && id >= next) next = id + 2;
    if ((next & 1) !== this.opts.role || next < 2 || next > 0xffffffff) next = 2 + this.opts.role;
    this.nextId = next;
    return taken;
  }

  // ---- carrier ----

  onCarrierUp(now: number): void {
    this.carrier = true;
    this.peerHello = false;
    this.lastHeard = now;
    this.count.carrierUps++;
    this.clearControl();
    this.queue(now, {
      type: RecordType.Hello,
      version: WRAP_VERSION,
      bootId: this.opts.bootId,
      window: this.opts.windowBytes,
      buffer: this.maxBuffered,
    });
  }

  onCarrierDown(now: number): void {
    if (!this.carrier) return;
    this.carrier = false;
    this.peerHello = false;
    this.count.carrierLosses++;
    this.clearControl();
    for (const c of this.live.values()) this.hold(now, c);
  }

  handleRecord(now: number, buf: Uint8Array): void {
    this.lastHeard = now;
    this.count.recordsIn++;
    let rec: WrapRecord;
    try {
      rec = decodeRecord(buf);
    } catch (e) {
      return this.violation('undecodable', `undecodable record: ${(e as Error).message}`);
    }
    if (rec.type === RecordType.Hello) return this.onHello(now, rec.version, rec.bootId, rec.window, rec.buffer);
    if (!this.peerHello) return this.violation('before-hello', `record type ${rec.type} before hello`);
    switch (rec.type) {
      case RecordType.Ping:
        this.pongDue = this.carrier;
        return;
      case RecordType.Pong:
        return;
      case RecordType.Open:
        return this.onOpen(
          now,
          rec.conn,
          rec.wrapPort,
          rec.target,
          rec.holdMs,
          (rec.flags & OPEN_DELTA) !== 0,
          (rec.flags & OPEN_DATAGRAM) !== 0,
        );
    }
    const c = this.live.get(rec.conn);
    if (!c) {
      // A late record for a connection that has ended: tell a resuming peer why, once.
      if (rec.type === RecordType.Resume || rec.type === RecordType.Data) {
        // One answer queued per id: a flood of records for it is not a flood of answers.
        if (this.answering.has(rec.conn)) return;
        const ended = this.recentClosed.get(rec.conn);
        if (typeof ended === 'object') {
          this.queue(now, { type: RecordType.Fin, conn: rec.conn, offset: ended.finOut });
          this.queue(now, { type: RecordType.Ack, conn: rec.conn, offset: ended.finIn }, rec.conn);
        } else
          this.queue(
            now,
            { type: RecordType.Close, conn: rec.conn, code: ended ?? CloseCode.UnknownConnection, text: 'no such connection' },
            rec.conn,
          );
      }
      return;
    }
    switch (rec.type) {
      case RecordType.Opened:
        if (!c.local) return this.violation('wrong-side', `opened for connection ${c.id} that the peer opened`);
        if (c.state === 'opening') {
          c.state = 'open';
          this.events.push({ type: 'opened', conn: c.id });
        }
        // The peer knows the connection (it may not have had it to RESUME): the hold is over.
        return this.resumed(now, c);
      case RecordType.Data:
        return this.onData(now, c, rec.offset, rec.data);
      case RecordType.Ref:
        return this.onRef(now, c, rec.offset, rec.length, rec.digest);
      case RecordType.Nack:
        if (!c.delta || rec.offset < c.send.acked || rec.offset > c.send.next)
          return this.protocolError(now, c, `nack at ${rec.offset} outside [${c.send.acked}, ${c.send.next}]`);
        // No REF went out below rawUntil since it last rose (a NACK, a carrier loss): a NACK there
        // asks again for octets already resent raw, and would have us resend the window per 13
        // octets. Ignored, counted (the resend under way, or a RESUME's, clears the peer's NACK).
        if (rec.offset < c.delta.rawUntil)
          return this.violation('nack', `connection ${c.id}: nack at ${rec.offset}, below ${c.delta.rawUntil}: resent raw already`);
        // Resend from the offset, raw, up to where we had got (the chunk deque no longer covers
        // it; the raw path handles that): a later NACK must lie beyond it, so each octet is
        // resent for a NACK at most once.
        c.delta.rawUntil = Math.max(c.delta.rawUntil, c.send.next, rec.offset + 1);
        c.send.rewindTo(rec.offset);
        return;
      case RecordType.Ack: {
        const before = c.send.room;
        const acked = c.send.acked;
        if (!c.send.ack(rec.offset)) return this.protocolError(now, c, `ack ${rec.offset} beyond the stream's end ${c.send.end}`);
        this.outBytes -= c.send.acked - acked;
        if (before === 0 && c.send.room > 0) {
          if (this.outBytes < this.maxBuffered) this.events.push({ type: 'writable', conn: c.id });
          else this.blocked.add(c.id);
        }
        this.wakeBlocked();
        return this.maybeDone(now, c);
      }
      case RecordType.Resume:
        if (!c.local) c.peerCarrier = this.count.carrierUps; // an OPEN after it is no resend
        if (!c.send.skipTo(rec.offset))
          return this.protocolError(now, c, `resume at ${rec.offset} outside [${c.send.acked}, ${c.send.end}]`);
        return this.resumed(now, c);
      case RecordType.Fin:
        if (c.recv.finAt !== undefined && c.recv.finAt !== rec.offset)
          return this.protocolError(now, c, `fin moved from ${c.recv.finAt} to ${rec.offset}`);
        if (rec.offset < c.recv.received) return this.protocolError(now, c, `fin at ${rec.offset} below received ${c.recv.received}`);
        c.recv.finAt = rec.offset;
        return this.checkEnd(now, c);
      case RecordType.Close:
        return this.forget(now, c, rec.code, rec.text || CLOSE_NAMES[rec.code] || `code ${rec.code}`, true, true);
    }
  }

  /**
   * A record as the pieces it arrived in (the carrier decrypts reads as they come): a DATA
   * record is taken piece by piece, uncopied; anything else is joined and decoded.
   */
  handleRecordParts(now: number, parts: Uint8Array[]): void {
    if (parts.length === 1) return this.handleRecord(now, parts[0]);
    const head = parts.length ? decodeDataHeader(parts[0]) : undefined;
    const c = head && this.peerHello ? this.live.get(head.conn) : undefined;
    const total = parts.reduce((n, p) => n + p.length, 0) - DATA_HEADER_LEN;
    if (!c || total > MAX_DATA) return this.handleRecord(now, Buffer.concat(parts)); // the general path decides
    this.lastHeard = now;
    this.count.recordsIn++;
    let offset = head!.offset;
    for (const piece of [parts[0].subarray(DATA_HEADER_LEN), ...parts.slice(1)]) {
      if (piece.length === 0) continue;
      this.onData(now, c, offset, piece);
      offset += piece.length;
      if (this.live.get(c.id) !== c) return; // closed by a protocol error
    }
  }

  private onData(now: number, c: WrapConn, offset: number, data: Uint8Array): void {
    if (c.recv.finAt !== undefined && offset + data.length > c.recv.finAt)
      return this.protocolError(now, c, `data up to ${offset + data.length} beyond the fin at ${c.recv.finAt}`);
    if (c.delta?.nackAt !== undefined) {
      // Sent before the peer saw our NACK: dropped until the resend reaches us.
      if (offset > c.recv.received) return;
      c.delta.nackAt = undefined;
    }
    if (!this.withinWindow(now, c, offset + data.length)) return;
    const fresh = c.recv.accept(offset, data);
    if (fresh === 'gap') return this.protocolError(now, c, `data at ${offset} beyond received ${c.recv.received}`);
    if (fresh) {
      this.inBytes += fresh.length;
      if (c.delta) for (const ch of c.delta.recvChunker.push(fresh)) this.refCache.put(ch.key, ch.length, ch.bytes!);
      if (c.datagram) this.active(now, c);
      this.events.push({ type: 'deliver', conn: c.id, data: fresh });
    }
    this.checkEnd(now, c);
  }

  // ---- time ----

  /** Each timer's deadline, undefined while it is not armed (a copy). */
  deadlines(): Record<WrapTimer, number | undefined> {
    return { ...this.scanDeadlines() };
  }

  /** The earliest deadline of any timer. */
  pollTimeout(): number | undefined {
    const t = this.scanDeadlines();
    let at: number | undefined;
    for (const timer of WRAP_TIMERS) {
      const d = t[timer];
      if (d !== undefined && (at === undefined || d < at)) at = d;
    }
    return at;
  }

  /**
   * Fill the deadline table in one pass over the connections. The table is reused: the driver
   * asks for pollTimeout after every batch of records, so it allocates nothing.
   */
  private scanDeadlines(): Record<WrapTimer, number | undefined> {
    const t = this.due;
    t.silence = this.carrier ? this.lastHeard + this.opts.silenceMs : undefined;
    t.ping = this.carrier ? this.lastSent + this.opts.pingMs : undefined;
    t.ack = t.hold = t['flow-idle'] = t['delta-tail'] = t.coalesce = undefined;
    if (this.carrier) {
      for (const since of this.ackDirty.values()) t.ack = Math.min(t.ack ?? Infinity, since + ACK_DELAY_MS);
      let held = Infinity;
      for (const since of this.openedDue.values()) held = Math.min(held, since);
      if (this.peerHello) for (const id of this.openDeferred) held = Math.min(held, this.live.get(id)?.openedAt ?? held);
      if (held !== Infinity) t.coalesce = held + ACK_DELAY_MS;
    }
    // From the connections each timer can concern, not all of them (idle ones cost nothing here).
    for (const c of this.holding) t.hold = Math.min(t.hold ?? Infinity, c.holdUntil!);
    for (const c of this.flows) {
      t['flow-idle'] = c.lastActivity + this.udpIdleMs; // the least recently active
      break;
    }
    if (this.carrier && this.peerHello)
      for (const c of this.sendQueue)
        if (this.tailWaits(c)) t['delta-tail'] = Math.min(t['delta-tail'] ?? Infinity, c.delta!.lastAppend + DELTA_TAIL_MS);
    return t;
  }

  /**
   * Delta mode: `c`'s next bytes are an unfinished last chunk that nextDelta holds back for the
   * rest of it, and could go once the wait ends. Not while a whole chunk is queued past `next`
   * (it goes without a wait), the stream has ended, or the window or the peer's quota has no
   * room (an ACK moves it then): a past deadline it could not act on would spin the timer.
   */
  private tailWaits(c: WrapConn): boolean {
    const d = c.delta;
    const s = c.send;
    if (!d || s.next >= s.end || s.finAt !== undefined) return false;
    const last = d.sendChunks.length > 0 ? d.sendChunks.at(d.sendChunks.length - 1) : undefined;
    if (last && last.offset + last.length > s.next) return false;
    return this.budgetOf(c) > 0;
  }

  /** What `c` may put on the carrier now: the peer's receive window per connection and its quota for all of them (§16.5.5). */
  private budgetOf(c: WrapConn): number {
    return Math.min(MAX_DATA, this.peerBuffer - this.sendInFlight, this.peerWindow - c.send.inFlight);
  }

  /** Fire every timer due at `now`, in WRAP_TIMERS order (a silent carrier is dropped before anything is queued on it). */
  handleTimeout(now: number): void {
    const due = this.deadlines(); // a copy: firing changes the deadlines
    for (const timer of WRAP_TIMERS) {
      const at = due[timer];
      if (at !== undefined && at <= now) this.fire(now, timer);
    }
  }

  private fire(now: number, timer: WrapTimer): void {
    switch (timer) {
      case 'silence':
        if (!this.carrier || now - this.lastHeard < this.opts.silenceMs) return;
        // Reading stopped for our unread replies, and the peer never took them: its fault, counted.
        if (this.backlogged)
          this.violation('unread', `${this.control.length} control records unread by the peer for ${this.opts.silenceMs} ms`);
        this.events.push({ type: 'drop-carrier', reason: 'silence', detail: `no record from the peer for ${this.opts.silenceMs} ms` });
        return this.onCarrierDown(now);
      case 'ping':
        if (!this.carrier || now - this.lastSent < this.opts.pingMs) return;
        this.queue(now, { type: RecordType.Ping });
        this.lastSent = now; // one PING per interval, even while the carrier is not writable
        return;
      case 'ack':
        // Due ACKs go to the control queue now, so a deadline never stays in the past.
        for (const [id, since] of this.ackDirty) {
          const c = this.live.get(id);
          if (!c) this.ackDirty.delete(id);
          else if (now - since >= ACK_DELAY_MS) this.flushAck(now, c);
        }
        return;
      case 'hold':
        for (const c of this.holding) {
          // Released by forget() (deleting the entry visited is safe).
          if (now >= c.holdUntil!)
            this.forget(
              now,
              c,
              CloseCode.HoldExpired,
              `the link to the peer was down for more than the hold time (${c.holdMs} ms)`,
              false,
              true,
            );
        }
        return;
      case 'flow-idle':
        // UDP has no FIN: the side that opened the flow ends it, the peer follows and it completes.
        for (const c of this.flows) {
          if (now - c.lastActivity < this.udpIdleMs) break; // the rest were active later
          this.localEnd(now, c.id); // leaves `flows` (deleting the entry visited is safe)
        }
        return;
      case 'delta-tail':
        return; // the tail is due: the next pollRecord sends it
      case 'coalesce': {
        for (const id of this.openDeferred) {
          const c = this.live.get(id);
          if (!c || now - c.openedAt >= ACK_DELAY_MS) this.announce(now, id);
        }
        for (const [id, since] of this.openedDue) {
          const c = this.live.get(id);
          if (!c) this.openedDue.delete(id);
          else if (now - since >= ACK_DELAY_MS) this.releaseOpened(now, c);
        }
        return;
      }
      default: {
        const _unhandled: never = timer; // a timer added to WRAP_TIMERS needs its case here
        return _unhandled;
      }
    }
  }

  // ---- output ----

  /**
   * The next record for the carrier, as parts to be sealed together (a DATA header and its
   * bytes travel uncopied): control first, then DATA round-robin over the connections.
   */
  pollRecord(now: number): Uint8Array[] | undefined {
    if (!this.carrier) return undefined;
    let out = this.shiftControl();
    if (!out && this.peerHello) out = this.nextData(now);
    if (out) {
      this.lastSent = now;
      this.count.recordsOut++;
    }
    return out;
  }

  pollEvent(): WrapEvent | undefined {
    return this.events.shift();
  }

  // ---- internals ----

  private newConn(
    now: number,
    id: number,
    local: boolean,
    wrapPort: number,
    target: Target,
    holdMs: number,
    delta: boolean,
    datagram: boolean,
  ): WrapConn {
    const c: WrapConn = {
      id,
      local,
      wrapPort,
      target,
      holdMs,
      state: 'opening',
      send: new SendStream(this.peerHello ? this.peerWindow : this.opts.windowBytes, (before) => this.sendChanged(c, before)),
      recv: new RecvStream(),
      openSent: false,
      holdUntil: undefined,
      heldSince: undefined,
      outages: 0,
      openedAt: now,
      lastActivity: now,
      delta: delta
        ? {
            sendChunker: new Chunker(),
            sendChunks: new Deque(),
            rawUntil: 0,
            recvChunker: new Chunker(true),
            nackAt: undefined,
            lastAppend: now,
          }
        : undefined,
      datagram,
      peerCarrier: local ? 0 : this.count.carrierUps,
      uid: undefined,
    };
    this.live.set(id, c);
    if (datagram && local) this.flows.add(c);
    return c;
  }

  private sendOpen(now: number, c: WrapConn): void {
    c.openSent = true;
    this.sendChanged(c, c.send.inFlight); // its data may go now
    this.queue(now, {
      type: RecordType.Open,
      conn: c.id,
      wrapPort: c.wrapPort,
      target: c.target,
      holdMs: c.holdMs,
      flags: (c.delta ? OPEN_DELTA : 0) | (c.datagram ? OPEN_DATAGRAM : 0),
    });
  }

  private hold(now: number, c: WrapConn): void {
    c.send.rewind();
    // What is resent after a loss goes raw: the chunk deque no longer describes it.
    if (c.delta) {
      c.delta.rawUntil = Math.max(c.delta.rawUntil, c.send.end);
      c.delta.sendChunks = new Deque();
    }
    if (c.holdUntil !== undefined) return;
    c.heldSince = now;
    c.holdUntil = now + c.holdMs;
    this.holding.add(c);
    if (c.openSent || !c.local) {
      c.outages++;
      this.events.push({ type: 'held', conn: c.id });
    }
  }

  private resumed(now: number, c: WrapConn): void {
    if (c.holdUntil === undefined) return;
    const heldMs = now - (c.heldSince ?? now);
    c.holdUntil = undefined;
    this.holding.delete(c);
    c.heldSince = undefined;
    if (c.state === 'held') c.state = 'open';
    this.events.push({ type: 'resumed', conn: c.id, heldMs });
  }

  private onHello(now: number, version: number, bootId: bigint, window?: number, buffer?: number): void {
    // One per carrier: each would queue a RESUME per connection (a 30-byte record answered by thousands).
    if (this.peerHello) return this.violation('second-hello', 'second hello on the carrier');
    if (version !== WRAP_VERSION) {
      this.violation('version', `hello version ${version}, this side speaks ${WRAP_VERSION}`);
      this.events.push({
        type: 'drop-carrier',
        reason: 'version',
        detail: `the peer speaks WRAP version ${version}, this side ${WRAP_VERSION}`,
      });
      return this.onCarrierDown(now);
    }
    if (this.peerBootId !== undefined && this.peerBootId !== bootId) {
      // The peer restarted: every connection it knew is gone with its sockets.
      this.events.push({ type: 'peer-restarted' });
      // Its chunk cache went with it: references would only cost NACKs.
      this.refIndex.clear();
      this.refCache.clear();
      for (const c of [...this.live.values()]) {
        if (!c.local || c.openSent)
          this.forget(now, c, CloseCode.PeerRestarted, 'the peer spookd restarted and lost the connection', false, true);
      }
      // Its connection ids start again: ended ones of its old incarnation (those just closed
      // included) must not answer its new connections.
      this.recentClosed.clear();
    }
    this.peerBootId = bootId;
    this.peerHello = true;
    // Send no more than the peer takes: its window per connection, its quota for all (≥ 1 record).
    this.peerWindow = Math.min(this.opts.windowBytes, Math.max(DATA_HEADER_LEN + 1, window ?? this.opts.windowBytes));
    this.peerBuffer = Math.min(this.maxBuffered, Math.max(this.peerWindow, buffer ?? this.maxBuffered));
    for (const c of this.live.values()) c.send.window = this.peerWindow;
    // Connections opened while no carrier was up were never announced: they start now, with
    // nothing to resume (a connection announced on an earlier carrier keeps its hold running).
    const unannounced = [...this.live.values()].filter((c) => c.local && !c.openSent);
    for (const c of this.live.values()) {
      if (c.local && c.state === 'opening') this.sendOpen(now, c);
      // Tell the peer how much of its stream we hold: it resends only the rest.
      if (c.openSent || !c.local) this.queue(now, { type: RecordType.Resume, conn: c.id, offset: c.recv.received });
      // And acknowledge again what was drained: the last ACK may have died with the old
      // carrier, and a sender with a full window would wait for it forever.
      if (c.recv.drained > 0) {
        c.recv.ackSent = 0;
        this.ackDirty.set(c.id, now);
      }
    }
    for (const c of unannounced) this.resumed(now, c);
  }

  private onOpen(now: number, id: number, wrapPort: number, target: Target, holdMs: number, delta: boolean, datagram: boolean): void {
    if ((id & 1) === this.opts.role) return this.violation('parity', `open of connection ${id}: its id has this side's parity`);
    // Id 0 is never opened (§16.4), nor is port 0 dialled or wrapped: such a connection could
    // not be handed over to the next process either (core/wrap/handover.ts).
    if (id === 0 || wrapPort === 0 || target.port === 0)
      return this.violation('open', `open of connection ${id}: ${id === 0 ? 'id 0 is reserved' : 'port 0'}`);
    const known = this.live.get(id);
    if (known) {
      // A resent OPEN (the carrier broke before our OPENED arrived) names what the first did and
      // comes first on its carrier. Anything else is another connection under a live id (a peer
      // whose counter wrapped): taken for a resend, its bytes past the old stream's offset would
      // reach the old server. Both are reset instead.
      const t = known.target;
      if (
        known.peerCarrier === this.count.carrierUps ||
        known.wrapPort !== wrapPort ||
        t.family !== target.family ||
        t.address !== target.address ||
        t.port !== target.port ||
        (known.delta !== undefined) !== delta ||
        known.datagram !== datagram
      )
        return this.protocolError(now, known, 'open of a live connection that is not a resend of its open', 'open');
      known.peerCarrier = this.count.carrierUps;
      if (known.state !== 'opening' && !this.answering.has(id)) {
        this.openedDue.delete(id);
        this.queue(now, { type: RecordType.Opened, conn: id }, id);
      }
      this.resumed(now, known);
      return;
    }
    if (this.answering.has(id)) return;
    const ended = this.recentClosed.get(id);
    if (ended !== undefined) {
      this.queue(
        now,
        {
          type: RecordType.Close,
          conn: id,
          code: typeof ended === 'object' ? CloseCode.Shutdown : ended,
          text: 'connection already ended',
        },
        id,
      );
      return;
    }
    if (!this.opts.mayDial?.(target, datagram)) {
      // One answer, no text, no dial: refused, unreachable and closed destinations look alike.
      this.remember(id, CloseCode.Refused);
      this.queue(now, { type: RecordType.Close, conn: id, code: CloseCode.Refused, text: '' }, id);
      return;
    }
    const full = this.live.size >= this.opts.maxConnections;
    if (full || this.opts.mayOpen?.() === false) {
      this.queue(
        now,
        {
          type: RecordType.Close,
          conn: id,
          code: CloseCode.TooManyConnections,
          text: full ? `this side carries ${this.live.size} connections already` : 'this host has no descriptor to spare',
        },
        id,
      );
      return;
    }
    // The peer's hold, but no longer than any this side would configure: a u32 names up to 49.7 days
    // of keeping our servers' connections open through an outage (§16.5.4, rev 1.34).
    this.newConn(now, id, false, wrapPort, target, Math.min(holdMs, MAX_HOLD_MS), delta, datagram);
    this.events.push({ type: 'dial', conn: id, target, wrapPort, datagram });
  }

  private checkEnd(now: number, c: WrapConn): void {
    if (c.recv.endDue) {
      c.recv.endDelivered = true;
      this.events.push({ type: 'end', conn: c.id });
    }
    this.maybeDone(now, c);
  }

  /** Both directions ended and were acknowledged: the connection is complete. */
  private maybeDone(now: number, c: WrapConn): void {
    if (c.recv.ackDue && !this.ackDirty.has(c.id)) this.ackDirty.set(c.id, now);
    if (!c.send.done || !c.recv.endDelivered || c.recv.drained < (c.recv.finAt ?? 0)) return;
    this.flushAck(now, c);
    this.release(c);
    this.remember(c.id, { finOut: c.send.finAt!, finIn: c.recv.finAt! });
    this.events.push({ type: 'done', conn: c.id });
  }

  private flushAck(now: number, c: WrapConn): void {
    this.ackDirty.delete(c.id);
    if (!c.recv.ackDue) return;
    this.releaseOpened(now, c);
    c.recv.ackSent = c.recv.drained;
    const queued = this.ackQueued.get(c.id);
    if (queued) {
      queued.offset = c.recv.drained;
      return;
    }
    if (!this.carrier) return;
    const ack = { conn: c.id, offset: c.recv.drained };
    if (this.enqueue(now, { ack })) this.ackQueued.set(c.id, ack);
  }

  /**
   * Whether a connection has something to send: bytes past `next`, or its FIN
   * (a connection of ours waits for its OPEN). nextData() finds nothing to send for any other.
   */
  private static sendable(c: WrapConn): boolean {
    return !(c.local && !c.openSent) && (c.send.next < c.send.end || c.send.finDue);
  }

  /** c.send changed (SendStream's hook; `before`: its inFlight before): the per-peer total and the send queue follow. */
  private sendChanged(c: WrapConn, before: number): void {
    if (this.live.get(c.id) !== c) return; // released: no longer counted
    this.sendInFlight += c.send.inFlight - before;
    if (WrapSession.sendable(c)) this.sendQueue.add(c);
    else this.sendQueue.delete(c);
  }

  /** c just sent: to the back of the round robin, if it has more. */
  private toBack(c: WrapConn): void {
    if (this.sendQueue.delete(c)) this.sendQueue.add(c);
  }

  /** Connections with something to send now (the send queue's length). */
  get queuedConns(): number {
    return this.sendQueue.size;
  }

  /**
   * For the simulator and tests: whether what is kept incrementally (the send queue, the
   * in-flight total, the holding connections, the flows in activity order) agrees with a scan
   * of every connection; a description of the first disagreement, or undefined.
   */
  audit(): string | undefined {
    let inFlight = 0;
    for (const c of this.live.values()) {
      inFlight += c.send.inFlight;
      const queued = this.sendQueue.has(c);
      if (WrapSession.sendable(c) !== queued) return `connection ${c.id}: sendable ${!queued}, queued ${queued}`;
    }
    for (const c of this.sendQueue) if (this.live.get(c.id) !== c) return `connection ${c.id} queued but not live`;
    if (inFlight !== this.sendInFlight) return `in flight ${this.sendInFlight}, the connections hold ${inFlight}`;
    let last = -Infinity;
    for (const c of this.flows) {
      if (this.live.get(c.id) !== c || !c.datagram || !c.local || c.send.finAt !== undefined)
        return `flow ${c.id} listed, not a live flow of ours`;
      if (c.lastActivity < last) return `flow ${c.id} out of activity order`;
      last = c.lastActivity;
    }
    for (const c of this.holding) if (this.live.get(c.id) !== c || c.holdUntil === undefined) return `connection ${c.id} listed as holding`;
    const users = new Map<number, number>();
    for (const c of this.live.values()) if (c.uid !== undefined) users.set(c.uid, (users.get(c.uid) ?? 0) + 1);
    if (users.size !== this.byUid.size || [...users].some(([u, n]) => this.byUid.get(u) !== n))
      return `slots by user ${JSON.stringify([...this.byUid])}, the connections hold ${JSON.stringify([...users])}`;
    for (const c of this.live.values()) {
      if ((c.holdUntil !== undefined) !== this.holding.has(c))
        return `connection ${c.id}: holding ${c.holdUntil !== undefined}, listed ${this.holding.has(c)}`;
      if ((c.datagram && c.local && c.send.finAt === undefined) !== this.flows.has(c)) return `flow ${c.id} not listed`;
    }
    return undefined;
  }

  private nextData(now: number): Uint8Array[] | undefined {
    for (const [id, since] of this.ackDirty) {
      const c = this.live.get(id);
      if (!c) this.ackDirty.delete(id);
      else if (now - since >= ACK_DELAY_MS || c.recv.drained - c.recv.ackSent >= this.opts.windowBytes / 8) this.flushAck(now, c);
    }
    const ctl = this.shiftControl();
    if (ctl) return ctl;
    for (const c of this.sendQueue) {
      if (this.openedDue.has(c.id)) {
        // The delayed OPENED goes just ahead of the connection's first record (it keeps its place: that record is next).
        this.releaseOpened(now, c);
        return this.shiftControl();
      }
      if (c.send.finDue && this.ackDirty.has(c.id)) {
        // The FIN takes the connection's pending ACK along: the peer's completion waits for both.
        this.flushAck(now, c);
        const ack = this.shiftControl();
        if (ack) return ack;
      }
      const budget = this.budgetOf(c);
      if (c.delta) {
        const rec = this.nextDelta(now, c, budget);
        if (rec) {
          this.toBack(c);
          return rec;
        }
      }
      const piece = c.delta ? undefined : c.send.take(budget);
      if (piece) {
        this.toBack(c);
        return [encodeDataHeader(c.id, piece.offset), ...piece.parts];
      }
      if (c.send.finDue) {
        c.send.finSentNow();
        const fin = encodeRecord({ type: RecordType.Fin, conn: c.id, offset: c.send.finAt! });
        // Everything may already be acknowledged: then this FIN completes our direction.
        this.maybeDone(now, c);
        return [fin];
      }
    }
    return undefined;
  }

  /**
   * Delta mode's next record for `c`: a REF when the next bytes are a whole chunk the peer
   * holds, else DATA up to the next chunk boundary (so the following record starts on one).
   */
  private nextDelta(now: number, c: WrapConn, budget: number): Uint8Array[] | undefined {
    const d = c.delta!;
    const s = c.send;
    if (s.next >= s.end) {
      if (s.finDue) {
        s.finSentNow();
        const fin = encodeRecord({ type: RecordType.Fin, conn: c.id, offset: s.finAt! });
        this.maybeDone(now, c);
        return [fin];
      }
      return undefined;
    }
    for (let ch = d.sendChunks.peek(); ch && ch.offset + ch.length <= s.next; ch = d.sendChunks.peek()) d.sendChunks.shift();
    const ch = d.sendChunks.peek();
    if (ch && ch.offset === s.next && s.next >= d.rawUntil && this.refIndex.touch(ch.key)) {
      if (ch.length > budget) return undefined; // a reference waits for room, rather than going raw
      d.sendChunks.shift();
      s.skipSent(ch.length);
      this.count.refsSent++;
      this.count.refBytes += ch.length;
      return [encodeRecord({ type: RecordType.Ref, conn: c.id, offset: ch.offset, length: ch.length, digest: ch.digest })];
    }
    // The unfinished tail waits a moment for the rest of its chunk (unless the stream ended).
    if (!ch && s.finAt === undefined && now - d.lastAppend < DELTA_TAIL_MS) return undefined;
    const limit = ch ? (ch.offset <= s.next ? ch.offset + ch.length : ch.offset) : s.end;
    const piece = s.take(Math.min(limit - s.next, budget));
    if (!piece) return undefined;
    if (ch && ch.offset + ch.length <= s.next) {
      // The record carries the chunk's last byte: from now on the peer holds it.
      d.sendChunks.shift();
      this.refIndex.put(ch.key, ch.length, true);
    }
    return [encodeDataHeader(c.id, piece.offset), ...piece.parts];
  }

  /** A REF: expand it from the cache, or ask for the bytes (NACK). */
  private onRef(now: number, c: WrapConn, offset: number, length: number, digest: Uint8Array): void {
    const d = c.delta;
    if (!d) return this.protocolError(now, c, 'ref on a connection opened without delta mode');
    if (d.nackAt !== undefined && offset > c.recv.received) return; // sent before our NACK arrived
    if (offset + length <= c.recv.received) return; // a duplicate after a resume
    if (offset !== c.recv.received || !d.recvChunker.atBoundary)
      return this.protocolError(now, c, `ref at ${offset}, received ${c.recv.received}, not on a chunk boundary`);
    if (c.recv.finAt !== undefined && offset + length > c.recv.finAt)
      return this.protocolError(now, c, `ref up to ${offset + length} beyond the fin at ${c.recv.finAt}`);
    const bytes = this.refCache.touch(digestKey(digest));
    if (!bytes || bytes.length !== length) {
      d.nackAt = offset;
      this.count.nacksSent++;
      this.queue(now, { type: RecordType.Nack, conn: c.id, offset });
      return;
    }
    if (!this.withinWindow(now, c, offset + length)) return;
    d.nackAt = undefined;
    c.recv.received += length;
    this.inBytes += length;
    d.recvChunker.skip(length);
    this.count.refsExpanded++;
    this.events.push({ type: 'deliver', conn: c.id, data: bytes });
    this.checkEnd(now, c);
  }

  /** The connection is gone: what it held leaves the per-peer totals. */
  private release(c: WrapConn): void {
    this.live.delete(c.id);
    if (c.uid !== undefined) {
      const n = (this.byUid.get(c.uid) ?? 0) - 1;
      if (n > 0) this.byUid.set(c.uid, n);
      else this.byUid.delete(c.uid);
    }
    this.sendQueue.delete(c);
    this.sendInFlight -= c.send.inFlight;
    this.holding.delete(c);
    this.flows.delete(c);
    this.blocked.delete(c.id);
    this.openDeferred.delete(c.id);
    this.openedDue.delete(c.id);
    this.outBytes -= c.send.buffered;
    this.inBytes -= c.recv.received - c.recv.drained;
    this.wakeBlocked();
  }

  /** Connections paused by the per-peer quota get going again, one socket read per free WAKE_BYTES. */
  private wakeBlocked(): void {
    let free = this.maxBuffered - this.outBytes;
    for (const id of this.blocked) {
      if (free < WAKE_BYTES) return; // a woken connection may add a whole read
      this.blocked.delete(id);
      const c = this.live.get(id);
      if (!c || c.send.room === 0) continue; // its own window wakes it
      this.events.push({ type: 'writable', conn: id });
      free -= WAKE_BYTES;
    }
  }

  /**
   * DATA or a REF that would take the connection's stream up to `upTo`: refused (a violation,
   * the connection reset) if that passes our receive window or the per-peer quota (§16.5.5).
   */
  private withinWindow(now: number, c: WrapConn, upTo: number): boolean {
    const fresh = upTo - c.recv.received;
    if (fresh <= 0) return true;
    if (upTo - c.recv.drained <= this.opts.windowBytes && this.inBytes + fresh <= this.maxBuffered) return true;
    this.count.windowViolations++;
    this.protocolError(
      now,
      c,
      `data up to ${upTo} past the receive window (drained ${c.recv.drained}, window ${this.opts.windowBytes}, ${this.inBytes} of ${this.maxBuffered} buffered for this peer)`,
      'window',
    );
    return false;
  }

  private forget(now: number, c: WrapConn, code: CloseCode, reason: string, byPeer: boolean, notifyLocal: boolean): void {
    const owesOpened = this.openedDue.has(c.id);
    this.release(c);
    this.ackDirty.delete(c.id);
    this.remember(c.id, code);
    if (!byPeer && this.carrier && this.peerHello && (c.openSent || !c.local)) {
      // The dial had completed: the client side learns it (OPENED) before the close, as without the delay.
      if (owesOpened) this.queue(now, { type: RecordType.Opened, conn: c.id });
      this.queue(now, { type: RecordType.Close, conn: c.id, code, text: reason });
    }
    if (notifyLocal) this.events.push({ type: 'close', conn: c.id, code, reason, byPeer });
  }

  private remember(id: number, code: CloseCode | { finOut: number; finIn: number }): void {
    this.recentClosed.set(id, code);
    if (this.recentClosed.size > RECENT_CLOSED) this.recentClosed.delete(this.recentClosed.keys().next().value!);
  }

  /** The peer broke the stream rules of connection `c`: a violation, and the connection is reset. */
  private protocolError(now: number, c: WrapConn, detail: string, kind: 'stream' | 'window' | 'open' = 'stream'): void {
    this.violation(kind, `connection ${c.id}: ${detail}`);
    this.forget(now, c, CloseCode.ProtocolError, detail, false, true);
  }

  private violation(kind: WrapViolation, detail: string): void {
    this.count.violations++;
    this.events.push({ type: 'violation', kind, detail });
  }

  /** Queue a control record; `answers`: it answers a peer's record about that connection id. */
  private queue(now: number, rec: WrapRecord, answers?: number): void {
    if (!this.carrier) return;
    if (this.enqueue(now, { rec: encodeRecord(rec), answers }) && answers !== undefined) this.answering.add(answers);
  }

  /** Append to the control queue, or drop the carrier if the peer has let it grow past twice the pause. */
  private enqueue(now: number, e: ControlEntry): boolean {
    if (this.control.length >= 2 * this.controlPause) {
      // Reading should have paused long before (backlogged): the carrier goes, its queue with it.
      this.violation('control-backlog', `${this.control.length} control records queued: the peer does not read the carrier`);
      this.events.push({ type: 'drop-carrier', reason: 'control-backlog', detail: 'control backlog over its limit' });
      this.onCarrierDown(now);
      return false;
    }
    this.control.push(e);
    return true;
  }

  private shiftControl(): Uint8Array[] | undefined {
    if (this.pongDue) {
      this.pongDue = false;
      return [encodeRecord({ type: RecordType.Pong })];
    }
    const c = this.control.shift();
    if (!c) return undefined;
    if (c.ack) {
      this.ackQueued.delete(c.ack.conn);
      return [encodeRecord({ type: RecordType.Ack, conn: c.ack.conn, offset: c.ack.offset })];
    }
    if (c.answers !== undefined) this.answering.delete(c.answers);
    return [c.rec!];
  }

  private clearControl(): void {
    this.control = new Deque();
    this.answering.clear();
    this.ackQueued.clear();
    this.pongDue = false;
    // A delayed OPENED dies with the carrier: the client side's resent OPEN is answered instead.
    this.openedDue.clear();
  }
}
