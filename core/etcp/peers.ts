/**
 * The ETCP session policy as a sans-I/O peer table (after quinn-proto's Endpoint): datagrams
 * come in with `handleDatagram(now, from, bytes)` and are routed to the configured peer whose
 * session opens them; timers fire through `handleTimeout(now)`; what to send, what to deliver
 * and what happened are polled (`pollTransmit`, `pollEvent`, `pollTimeout`). No socket, no clock
 * of its own: spookd drives it over UDP, testing/sim/etcp.ts over the simulated network.
 *
 * Per peer it owns:
 * - sessions: the current one (frames go out on it), superseded ones that still open frames for
 *   a grace period after their last use but never past a hard age (§12.6), and sessions we
 *   answered that the peer has not used yet; each list bounded, so a peer handshaking in a
 *   loop cannot fill the index space (§12.3);
 * - handshakes: first contact (member 2 holds back), retries, rekeys by the current session's
 *   initiator (after a time or a number of frames), a fresh handshake while the pair is
 *   decoherent; never more often than HANDSHAKE_RETRY_MS;
 * - roaming: the peer's address follows authenticated frames only (a completed handshake or
 *   a Data frame that opened), never a frame anyone could forge;
 * - work budgets (§12.9): the peer's own, and per source address for frames that fail to open;
 * - violations: pair drops only an authenticated peer can cause, and the limit past which its
 *   sessions are cut and a new handshake is needed;
 * - demultiplexing: an opened payload goes to the pair (ESTP) or to a QN domain.
 *
 * What the pair (HalfPair) and the domains do with a payload is the driver's: they sit above.
 */
import { decodeFrame, isHandshakeType } from '../../wire/header.js';
import { DROP_REASON_NAMES } from '../../wire/constants.js';
import { WireError } from '../../wire/errors.js';
import { QN_MSG_TYPE } from '../../wire/qn.js';
import { PairState } from '../pair/lifecycle.js';
import { BudgetPool, SourceBudgets, type WorkBudget } from './budget.js';
import { MAX_SEALED_PAYLOAD, pairIdentity, type EtcpEndpoint, type HandshakeOutcome, type Session } from './endpoint.js';
import {
  DECOHERENT_REHANDSHAKE_MS,
  HANDSHAKE_RETRY_MS,
  MAX_FAILING_SOURCES,
  MAX_OLD_SESSIONS,
  MAX_UNCONFIRMED,
  MEMBER2_FIRST_CONTACT_DELAY_MS,
  OLD_SESSION_GRACE_MS,
  REKEY_AFTER_MESSAGES,
  REKEY_AFTER_MS,
  SOURCE_FAILURE_BUDGET_MS,
  oldSessionMaxAgeMs,
} from './constants.js';
import { violationsIn, type DaemonDrop, type DropCounts } from './drops.js';
import type { PairDropCounts } from '../pair/drops.js';
import { DeadlineHeap } from '../util/deadline-heap.js';

/** A UDP address; opaque but for `address`, which the source-budget exemption compares. */
export interface Addr {
  readonly address: string;
  readonly port: number;
}

export const sourceOf = (a: Addr): string => `${a.address}:${a.port}`;

export interface PeerSpec {
  name: string;
  publicKey: Uint8Array;
  /** Where to find it before it has sent an authenticated frame (its configured endpoint). */
  endpoint?: Addr;
  /** Its pair's lifecycle state: a decoherent pair re-handshakes, a closed one never does. */
  pairState: () => PairState;
  /** Milliseconds of work per second its datagrams may take (§12.9). */
  budgetMs: number;
}

export interface PeerTableOptions {
  /** Handshakes and Data frame protection; the table decides when to handshake and which sessions live. */
  etcp: EtcpEndpoint;
  localPublicKey: Uint8Array;
  peers: PeerSpec[];
  /** When the table starts (first contact is timed from it). */
  now: number;
  /**
   * The driver's monotonic clock, read only to measure the work a datagram took and to refill
   * the budgets (the simulator's returns simulated time: work costs nothing there).
   */
  clock: () => number;
  /** The wall clock (ms) for a HandshakeInit's timestamp, which its responder checks for replays; default `now`. */
  timestamp?: (now: number) => number;
  rekeyAfterMs?: number;
  rekeyAfterMessages?: number;
  sessionGraceMs?: number;
  /** Violations since the last cut that cut a peer's sessions. */
  violationLimit: number;
}

export interface OldSession {
  readonly session: Session;
  /** Moves with every frame opened on the session, never past `deadline`. */
  readonly until: number;
  readonly deadline: number;
}

export interface UnconfirmedSession {
  readonly session: Session;
  readonly until: number;
}

/** One configured peer, as the table's owner may read it. */
export interface PeerView {
  readonly name: string;
  readonly publicKey: Uint8Array;
  readonly role: 'sequencer' | 'follower';
  /** Where frames go: configured, then learned from authenticated frames (roaming). */
  readonly addr: Addr | undefined;
  /** The session frames go out on. */
  readonly session: Session | undefined;
  readonly oldSessions: readonly OldSession[];
  readonly unconfirmed: readonly UnconfirmedSession[];
  readonly lastInitAt: number;
  /** Violations counted at the last cut (the limit counts from there). */
  readonly violations: number;
  /** Times its sessions were cut for violations. */
  readonly disconnects: number;
  /** CPU time its datagrams (and its wrapper carriers) may take. */
  readonly budget: WorkBudget;
  readonly fenced: boolean;
  /** HandshakeInits sent to the peer, and sessions established with it (either side initiating). */
  readonly handshakesSent: number;
  readonly sessionsEstablished: number;
  /** HandshakeInits sent since the last session came up (0 while one is up). */
  readonly unanswered: number;
}

/** After this many unanswered HandshakeInits (2 s apart) the driver is told, so that it can warn. */
export const UNANSWERED_REPORT_AFTER = 3;

interface Peer {
  name: string;
  publicKey: Uint8Array;
  role: 'sequencer' | 'follower';
  pairState: () => PairState;
  addr: Addr | undefined;
  session: Session | undefined;
  oldSessions: { session: Session; until: number; deadline: number }[];
  unconfirmed: { session: Session; until: number }[];
  lastInitAt: number;
  violations: number;
  disconnects: number;
  budget: WorkBudget;
  fenced: boolean;
  handshakesSent: number;
  sessionsEstablished: number;
  unanswered: number;
}

/** The table's timers, per peer; `pollTimeout` is the earliest of all. */
export type PeerTimer =
  /** No session: the first HandshakeInit (member 2 after its delay) or a retry. */
  | 'handshake'
  /** The current session is due for fresh keys (its age, or frames sealed on it). */
  | 'rekey'
  /** The pair is decoherent: a fresh handshake, in case the peer lost our session. */
  | 'rehandshake'
  /** The first superseded session to go (idle past its grace, or at its hard age). */
  | 'old-session'
  /** The first session we answered and the peer never used, to go. */
  | 'unconfirmed';

export type PeerEvent =
  /** An ESTP payload for the peer's pair. */
  | { type: 'pair-payload'; peer: string; packetNumber: number; payload: Uint8Array; wireBytes: number }
  /** A QN message for the domain `domainId`, from `peer`. */
  | { type: 'domain-payload'; peer: string; domainId: number; payload: Uint8Array }
  /** A session index came to life / was forgotten (the XDP pair table follows). */
  | { type: 'session-added'; peer: string; localIndex: number }
  | { type: 'session-removed'; peer: string; localIndex: number }
  /** Frames to the peer now go out on `session` (a new packet space for the pair). */
  | { type: 'established'; peer: string; session: Session }
  /** The peer passed the violation limit: its sessions are cut, a new handshake is needed. */
  | { type: 'violation-limit'; peer: string; violations: number }
  /**
   * The peer has not answered `attempts` HandshakeInits in a row (from UNANSWERED_REPORT_AFTER on,
   * at each retry): unreachable, not running, or it does not know our key. The driver warns, rate-limited.
   */
  | { type: 'handshake-unanswered'; peer: string; to: Addr; attempts: number }
  /** A HandshakeInit from an unauthorised static key (the driver warns, rate-limited). */
  | { type: 'handshake-refused'; from: Addr; detail: string }
  /** A CookieReply to our init: the next init to the peer carries mac2. */
  | { type: 'cookie-stored'; peer: string; from: Addr }
  /** A counted drop (already in `drops`), for the log. */
  | { type: 'drop'; reason: DaemonDrop; peer?: string; from?: Addr; detail?: string };

export interface Transmit {
  to: Addr;
  datagram: Uint8Array;
  /** The configured peer it is for (unset: a CookieReply to whoever sent an init). */
  peer?: string;
}

export class PeerTable {
  /** Datagrams dropped, by reason (the pairs count their own). */
  readonly drops: DropCounts = {};
  /** Data frames that fail to open are charged here, by source address, not to the peer (§12.9). */
  readonly failing = new SourceBudgets(SOURCE_FAILURE_BUDGET_MS, MAX_FAILING_SOURCES);
  /** The peers' work budgets: work-conserving, so a peer is held back only while another is busy. */
  readonly budgets: BudgetPool;
  private readonly peers = new Map<string, Peer>();
  private readonly events: PeerEvent[] = [];
  private readonly transmits: Transmit[] = [];
  private readonly startedAt: number;
  private readonly rekeyAfterMs: number;
  private readonly rekeyAfterMessages: number;
  private readonly graceMs: number;
  private readonly maxOldAgeMs: number;
  /**
   * Each peer's earliest timer, re-keyed whenever what it depends on may have moved (the
   * table's own inputs here; the pair's state through `refresh`): pollTimeout and
   * handleTimeout touch only the due peers, not all of them (a hub with 1,000, bench scale).
   */
  private readonly deadlines = new DeadlineHeap<Peer>();
  /** Every peer keyed once (not in the constructor: a driver's `pairState` may not answer yet). */
  private keyed = false;

  constructor(private readonly o: PeerTableOptions) {
    this.budgets = new BudgetPool(o.clock);
    this.startedAt = o.now;
    this.rekeyAfterMs = o.rekeyAfterMs ?? REKEY_AFTER_MS;
    this.rekeyAfterMessages = o.rekeyAfterMessages ?? REKEY_AFTER_MESSAGES;
    this.graceMs = o.sessionGraceMs ?? OLD_SESSION_GRACE_MS;
    this.maxOldAgeMs = oldSessionMaxAgeMs(this.rekeyAfterMs, this.graceMs);
    for (const s of o.peers) this.peers.set(s.name, this.entry(s));
  }

  private entry(s: PeerSpec): Peer {
    return {
      name: s.name,
      publicKey: s.publicKey,
      role: pairIdentity(this.o.localPublicKey, s.publicKey).localId === 1 ? 'sequencer' : 'follower',
      pairState: s.pairState,
      addr: s.endpoint,
      session: undefined,
      oldSessions: [],
      unconfirmed: [],
      lastInitAt: -Infinity,
      violations: 0,
      disconnects: 0,
      budget: this.budgets.add(s.budgetMs),
      fenced: false,
      handshakesSent: 0,
      sessionsEstablished: 0,
      unanswered: 0,
    };
  }

  /**
   * One more peer (a reload): the driver has added it to ETCP's authorised keys; its first
   * handshake follows the usual timers (at once for the sequencer, after the member-2 delay).
   */
  addPeer(s: PeerSpec): void {
    if (this.peers.has(s.name)) throw new RangeError(`peer ${s.name} is already in the table`);
    const p = this.entry(s);
    this.peers.set(s.name, p);
    if (this.keyed) this.touch(p);
  }

  /** A peer removed (a reload): its sessions go (session-removed events for the pair table), its timers and budget too. */
  removePeer(name: string): void {
    const p = this.peers.get(name);
    if (!p) return;
    this.closeAll(p);
    this.deadlines.set(p, undefined);
    this.budgets.remove(p.budget);
    this.peers.delete(name);
    // Its payloads not yet taken by the driver go with it (the driver has no pair for them any more).
    for (let i = this.events.length - 1; i >= 0; i--) {
      const e = this.events[i];
      if ((e.type === 'pair-payload' || e.type === 'domain-payload' || e.type === 'established') && e.peer === name)
        this.events.splice(i, 1);
    }
    // And its datagrams not yet sent (an init, a HandshakeResp, a QN frame): else a driver that polls
    // after the removal sent them to a peer no longer configured.
    for (let i = this.transmits.length - 1; i >= 0; i--) if (this.transmits[i].peer === name) this.transmits.splice(i, 1);
  }

  // ---- reading ----

  peer(name: string): PeerView | undefined {
    return this.peers.get(name);
  }

  get names(): string[] {
    return [...this.peers.keys()];
  }

  /** Whether a payload for `peer` can go out now (a session and an address). */
  canSend(name: string): boolean {
    const p = this.peers.get(name);
    return p?.session !== undefined && p.addr !== undefined;
  }

  /** Deadlines of the peer's armed timers. */
  timers(name: string): Partial<Record<PeerTimer, number>> {
    const p = this.peers.get(name);
    const t: Partial<Record<PeerTimer, number>> = {};
    if (!p || p.fenced) return t;
    if (p.oldSessions.length > 0) t['old-session'] = Math.min(...p.oldSessions.map((o) => o.until));
    if (p.unconfirmed.length > 0) t.unconfirmed = Math.min(...p.unconfirmed.map((o) => o.until));
    if (!p.addr || p.pairState() === PairState.CLOSED) return t;
    const paced = p.lastInitAt + HANDSHAKE_RETRY_MS;
    const s = p.session;
    if (!s) t.handshake = Math.max(paced, this.startedAt + (p.role === 'sequencer' ? 0 : MEMBER2_FIRST_CONTACT_DELAY_MS));
    else {
      // Only the current session's initiator rekeys (on age or frames sealed), so rekeys never cross;
      // it rekeys on age long before the responder could seal REKEY_AFTER_MESSAGES frames.
      if (s.initiator) t.rekey = s.packetsSent >= this.rekeyAfterMessages ? paced : Math.max(paced, s.establishedAt + this.rekeyAfterMs);
      if (p.pairState() === PairState.DECOHERENT) t.rehandshake = Math.max(paced, p.lastInitAt + DECOHERENT_REHANDSHAKE_MS);
    }
    return t;
  }

  /** The earliest deadline of any peer's timers; `handleTimeout` then. */
  pollTimeout(): number | undefined {
    this.keyAll();
    return this.deadlines.peek();
  }

  /**
   * The peer's pair may have changed state (its `pairState`, which the table does not see
   * change): a decoherent pair re-handshakes, a closed one stops. The driver calls this after
   * it stepped the pair; until then the peer's timers are as of the last input here.
   */
  refresh(name: string): void {
    const p = this.peers.get(name);
    if (p) this.touch(p);
  }

  pollTransmit(): Transmit | undefined {
    return this.transmits.shift();
  }

  pollEvent(): PeerEvent | undefined {
    return this.events.shift();
  }

  // ---- inputs ----

  /** One UDP datagram from `from`. Never throws on what the datagram holds. */
  handleDatagram(now: number, from: Addr, bytes: Uint8Array): void {
    // Port 0 cannot be sent to: a frame from it (forged on the path, or rewritten) must not
    // become the peer's address by roaming, nor be answered.
    if (from.port === 0) return this.drop('bad-source', { from });
    let frame;
    try {
      frame = decodeFrame(bytes, (id) => this.o.etcp.sessions.has(id));
    } catch (e) {
      if (!(e instanceof WireError)) throw e;
      this.drop(DROP_REASON_NAMES[e.reason], { from, detail: e.message });
      return;
    }
    if (isHandshakeType(frame.header.type)) return this.onHandshake(now, bytes, from);
    // Over its work budget, a peer's frames are dropped before the AEAD (which costs too).
    const target = this.o.etcp.sessions.get(frame.header.pairId);
    const p = target ? this.peers.get(target.peer.name) : undefined;
    // So is a source address in debt for frames that failed to open, unless it is the address the named
    // peer authenticated from (else whoever spoofs that address, from any port, could cut the peer off).
    const peerAddr = p?.addr !== undefined && p.addr.address === from.address;
    if (!peerAddr && !this.failing.admit(now, from.address)) return this.drop('source-over-budget', { from });
    // Its demand (what makes it busy for the others' budgets) is counted once the frame has opened, below.
    if (p && !p.budget.allows(now)) return this.drop('peer-over-budget', { peer: p.name });
    const t0 = this.o.clock();
    const opened = this.o.etcp.openData(bytes, frame.header.pairId, frame.header.packetNumber);
    const took = this.o.clock() - t0;
    if ('drop' in opened) {
      // Not the peer's work: anyone who sees pair ids can send frames that fail (§12.9).
      this.failing.charge(now, from.address, took);
      return this.drop(opened.drop, { from, detail: opened.detail });
    }
    p?.budget.countDemand(now);
    p?.budget.charge(took);
    const peer = this.peers.get(opened.session.peer.name);
    if (!peer || peer.fenced) return;
    const hadAddr = peer.addr !== undefined;
    peer.addr = from; // roaming: follow authenticated frames
    const old = peer.oldSessions.find((o) => o.session === opened.session);
    // The peer still sends on a superseded session: keep it open, within its hard limit.
    // (Its timer only moves later: the heap's key may stay early, which costs a wake-up, not a miss.)
    if (old) old.until = Math.min(now + this.graceMs, old.deadline);
    // The first Data frame on a session we answered: it is now the one we send on.
    else if (opened.session !== peer.session) {
      this.adopt(peer, opened.session, now);
      this.touch(peer);
    }
    // A first address arms the handshake timers. Otherwise a frame moves no timer earlier: no re-key per frame.
    if (!hadAddr) this.touch(peer);
    const payload = opened.payload;
    if (payload[0] === QN_MSG_TYPE) {
      if (payload.length < 5) return this.drop('unknown-domain', { peer: peer.name, detail: `QN payload of ${payload.length} bytes` });
      const domainId = ((payload[1] << 24) | (payload[2] << 16) | (payload[3] << 8) | payload[4]) >>> 0;
      this.events.push({ type: 'domain-payload', peer: peer.name, domainId, payload });
      return;
    }
    this.events.push({ type: 'pair-payload', peer: peer.name, packetNumber: frame.header.packetNumber, payload, wireBytes: bytes.length });
  }

  /** Handshakes to start or renew, sessions to retire: of the peers with a timer due, only. */
  handleTimeout(now: number): void {
    this.keyAll();
    const due: Peer[] = [];
    for (let p = this.deadlines.popDue(now); p; p = this.deadlines.popDue(now)) due.push(p);
    for (const p of due) {
      if (!p.fenced) {
        p.oldSessions = this.expire(p, p.oldSessions, now);
        p.unconfirmed = this.expire(p, p.unconfirmed, now);
        const t = this.timers(p.name);
        const fire = [t.handshake, t.rekey, t.rehandshake].some((at) => at !== undefined && at <= now);
        if (fire && p.addr) this.initiate(now, p, p.addr);
      }
      this.touch(p);
    }
  }

  /**
   * The pair's drop counters after it handled a payload: past `violationLimit` protocol
   * violations since the last cut, the peer's sessions are cut (a new handshake is needed).
   */
  handlePairDrops(now: number, name: string, pairDrops: Readonly<PairDropCounts>): void {
    const p = this.peers.get(name);
    if (!p || p.fenced) return;
    const total = violationsIn(pairDrops);
    if (total - p.violations < this.o.violationLimit) return;
    p.violations = total;
    p.disconnects++;
    this.events.push({ type: 'violation-limit', peer: name, violations: total });
    this.closeAll(p);
    p.lastInitAt = now; // no handshake from us at once: the peer must come back
    this.touch(p);
  }

  /** The driver fenced the peer's pair (its handling threw): its sessions go, none forms until a restart. */
  fence(name: string): void {
    const p = this.peers.get(name);
    if (!p || p.fenced) return;
    p.fenced = true;
    this.closeAll(p);
    this.touch(p);
  }

  /** Forget every session of a peer (their indices leave the pair table): a new handshake is needed. */
  dropSessions(name: string): void {
    const p = this.peers.get(name);
    if (!p) return;
    this.closeAll(p);
    this.touch(p);
  }

  /** Forget (or set) where a peer is, as if it had no configured endpoint: it must come to us. */
  setAddress(name: string, addr: Addr | undefined): void {
    const p = this.peers.get(name);
    if (!p) return;
    p.addr = addr;
    this.touch(p);
  }

  /** Seal a pair payload on the peer's current session (the pair's FrameSealer; only while `canSend`). */
  seal(name: string, payload: Uint8Array): { frame: Uint8Array; packetNumber: number } {
    const p = this.peers.get(name);
    const s = p?.session;
    if (!s) throw new Error(`no session with ${name}`);
    const frame = s.seal(payload);
    this.sealed(p!, s);
    return { frame, packetNumber: s.packetsSent - 1 };
  }

  /** As seal, in place (Session.sealInPlace): the pair's payload lies behind room for the header, before room for the tag. */
  sealInPlace(name: string, frame: Uint8Array): number {
    const p = this.peers.get(name);
    const s = p?.session;
    if (!s) throw new Error(`no session with ${name}`);
    const pn = s.sealInPlace(frame);
    this.sealed(p!, s);
    return pn;
  }

  /**
   * Send a QN payload on the peer's current session; false (dropped) while it has none (Raft
   * resends) or when it is too large for a frame.
   */
  sendPayload(name: string, payload: Uint8Array): boolean {
    const p = this.peers.get(name);
    if (!p?.session || !p.addr || p.fenced) return false;
    if (payload.length > MAX_SEALED_PAYLOAD) {
      this.drop('qn-oversized', { peer: name, detail: `${payload.length} bytes` });
      return false;
    }
    this.transmits.push({ to: p.addr, datagram: p.session.seal(payload), peer: name });
    this.sealed(p, p.session);
    return true;
  }

  /** Count a drop the driver decided (a domain's, an internal error). */
  count(reason: DaemonDrop, detail?: { peer?: string; from?: Addr; detail?: string }): void {
    this.drop(reason, detail ?? {});
  }

  // ---- internals ----

  private keyAll(): void {
    if (this.keyed) return;
    this.keyed = true;
    for (const p of this.peers.values()) this.touch(p);
  }

  /** Re-key the peer's earliest timer (after anything its `timers` read may have changed). */
  private touch(p: Peer): void {
    let next: number | undefined;
    for (const at of Object.values(this.timers(p.name))) if (next === undefined || at < next) next = at;
    this.deadlines.set(p, next);
  }

  /** A frame was sealed on `s`: past REKEY_AFTER_MESSAGES its initiator's rekey is due (paced). */
  private sealed(p: Peer, s: Session): void {
    if (s.packetsSent >= this.rekeyAfterMessages) this.touch(p);
  }

  private drop(reason: DaemonDrop, d: { peer?: string; from?: Addr; detail?: string }): void {
    this.drops[reason] = (this.drops[reason] ?? 0) + 1;
    this.events.push({ type: 'drop', reason, ...d });
  }

  private initiate(now: number, p: Peer, to: Addr): void {
    p.lastInitAt = now;
    // A full index space is counted and retried, never an error of this pair (§12.3).
    const init = this.o.etcp.tryInitiate(now, p.publicKey, this.o.timestamp?.(now) ?? now, sourceOf(to));
    if ('drop' in init) {
      this.drop(init.drop, { peer: p.name });
      return;
    }
    this.transmits.push({ to, datagram: init.datagram, peer: p.name });
    p.handshakesSent++;
    if (p.session) return; // a rekey: the current session still carries the pair
    if (++p.unanswered >= UNANSWERED_REPORT_AFTER)
      this.events.push({ type: 'handshake-unanswered', peer: p.name, to, attempts: p.unanswered });
  }

  private onHandshake(now: number, bytes: Uint8Array, from: Addr): void {
    const t0 = this.o.clock();
    const r = this.o.etcp.handleHandshake(now, bytes, sourceOf(from));
    const took = this.o.clock() - t0;
    // The DH of an init from an authorised key is that peer's work (§12.9), whatever came of it; but a
    // replayed init may come from anyone who captured one: its cost goes to the source address.
    const replay = r.kind === 'drop' && r.reason === 'handshake-replayed';
    const by =
      r.kind === 'drop' ? (replay ? undefined : r.peer) : r.kind === 'respond' || r.kind === 'established' ? r.session.peer : undefined;
    if (by) this.peers.get(by.name)?.budget.charge(took);
    else if (replay) this.failing.charge(now, from.address, took);
    if (r.kind === 'drop') {
      this.drop(r.reason, { from, detail: r.detail });
      if (r.reason === 'unauthorized-key') this.events.push({ type: 'handshake-refused', from, detail: r.detail });
      return;
    }
    if (r.kind === 'cookie') {
      // Under load: the init did no DH; its sender must prove its address with the cookie (§12.8).
      this.drop('cookie-required', { from });
      this.transmits.push({ to: from, datagram: r.datagram });
      return;
    }
    if (r.kind === 'cookie-stored') {
      this.events.push({ type: 'cookie-stored', peer: r.peer.name, from });
      return;
    }
    const p = this.peers.get(r.session.peer.name);
    if (p === undefined) {
      // The endpoint knows a key this table does not (a driver that authorised it there only): no session.
      this.o.etcp.close(r.session.localIndex);
      this.drop('unauthorized-key', { from, detail: `no peer named ${r.session.peer.name}` });
      return;
    }
    if (p.fenced) {
      // A fenced pair forms no sessions until the driver restarts.
      this.o.etcp.close(r.session.localIndex);
      this.drop('peer-fenced', { peer: p.name });
      return;
    }
    this.onSession(now, p, r, from);
    this.touch(p);
  }

  private onSession(now: number, p: Peer, r: Extract<HandshakeOutcome, { kind: 'respond' | 'established' }>, from: Addr): void {
    p.addr = from; // an authenticated handshake: roaming
    this.events.push({ type: 'session-added', peer: p.name, localIndex: r.session.localIndex });
    if (r.kind === 'established') return this.adopt(p, r.session, now);
    this.transmits.push({ to: from, datagram: r.datagram, peer: p.name });
    // A responder sends on the new session once the initiator proves it holds it (its first Data frame),
    // unless it has no session at all. Unconfirmed ones expire (a lost response, a retried init).
    if (!p.session) return this.adopt(p, r.session, now);
    p.unconfirmed.push({ session: r.session, until: now + this.graceMs });
    // Bounded per peer: an authorised peer answering nothing cannot fill the index space.
    while (p.unconfirmed.length > MAX_UNCONFIRMED) this.close(p, p.unconfirmed.shift()!.session);
  }

  /** Make `s` the session frames go out on; the previous one still opens frames for a while. */
  private adopt(p: Peer, s: Session, now: number): void {
    p.unconfirmed = p.unconfirmed.filter((u) => u.session !== s);
    if (p.session) {
      const deadline = p.session.establishedAt + this.maxOldAgeMs;
      p.oldSessions.push({ session: p.session, until: Math.min(now + this.graceMs, deadline), deadline });
      // Bounded per peer: a peer handshaking in a loop (and keeping every old session busy) holds no more.
      while (p.oldSessions.length > MAX_OLD_SESSIONS) this.close(p, p.oldSessions.shift()!.session);
    }
    p.session = s;
    p.sessionsEstablished++;
    p.unanswered = 0;
    this.events.push({ type: 'established', peer: p.name, session: s });
  }

  private expire<T extends { session: Session; until: number }>(p: Peer, list: T[], now: number): T[] {
    return list.filter((o) => {
      if (o.until > now) return true;
      this.close(p, o.session);
      return false;
    });
  }

  private close(p: Peer, s: Session): void {
    this.o.etcp.close(s.localIndex);
    this.events.push({ type: 'session-removed', peer: p.name, localIndex: s.localIndex });
  }

  private closeAll(p: Peer): void {
    if (p.session) this.close(p, p.session);
    for (const o of [...p.oldSessions, ...p.unconfirmed]) this.close(p, o.session);
    p.session = undefined;
    p.oldSessions = [];
    p.unconfirmed = [];
  }
}
