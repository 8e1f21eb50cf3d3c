/**
 * WrapManager: the I/O around WrapSession inside spookd (docs/OPERATIONS.md, "Wrappers").
 *
 * - interception: the BPF cgroup hooks send clients' connects to a wrapped port to our local
 *   intercept listener and record where they were going (drivers/bpf/wrap-hooks.ts);
 * - one carrier per peer (drivers/wrap/carrier.ts): the pair's sequencer dials, the other accepts;
 * - per wrapped connection: the local endpoint on each side (a TCP socket, or one end of a
 *   UDP flow), the two stream registers in the peer's WrapSession, recognition and counters.
 * Everything that decides is in core/wrap (WrapSession, HandshakeSlots, HandshakeAdmission);
 * this file moves bytes and keeps sockets honest (pause on a full window, acknowledge only what
 * the kernel took, close the way the peer did). Time: one real timer, armed for the earliest of
 * the sessions' deadlines (pollTimeout) and the carrier redial; each input passes performance.now().
 */
import type { WrapConnection, WrapStatsResult, WrapperEntry } from '../../client/protocol.js';
import { createServer, connect, type Server, type Socket, type AddressInfo } from 'node:net';
import { createSocket, type Socket as UdpSocket, type RemoteInfo } from 'node:dgram';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { KeyPair } from '../../crypto/primitives.js';
import { CloseCode, CLOSE_NAMES, type Target } from '../../wire/wrap.js';
import { WrapSession, type WrapEvent } from '../../core/wrap/session.js';
import { acceptCarrier, CarrierError, dialCarrier, HANDSHAKE_TIMEOUT_MS, type Carrier, type CarrierBudget } from './carrier.js';
import { tuneHeapForBulk } from './heap.js';
import { DeadlineHeap } from '../../core/util/deadline-heap.js';
import { admitLine, lineLimit, WarnLimiter, type LineLimit } from '../../core/util/warn-limiter.js';
import { tcpIo, WrapCounters, type ConnEnd, type LocalConn, type LocalIo, type WrapperCounters, type WrapperSpec } from './local.js';
import { WrapHooks, type ClientAddr } from '../bpf/wrap-hooks.js';
import { isDatagram, transportOf, wrapperKey, type WrapperKey, type WrapTransport } from '../../core/wrap/protocols.js';
import { DialPolicy, type AllowRule } from './policy.js';
import { listenerResetsOnClose, resetOnClose } from './linger.js';
import {
  HandshakeAdmission,
  HandshakeSlots,
  type HandshakeRefusal,
  type HandshakeSlotRefusal,
  descriptorRefusal,
  type DescriptorRefusal,
  type SlotRefusal,
} from '../../core/wrap/admission.js';
import { descriptorLimit, descriptorsOpen } from './fdlimit.js';
import { DatagramDeframer, type FlowDrop } from '../../core/wrap/udp.js';
import { Redialer, REDIAL_MAX_MS } from '../../core/wrap/redial.js';
import { defaultHoldMs } from '../../core/wrap/hold.js';
import {
  ConnectDeadlines,
  countsDown,
  countsDownAt,
  defaultConnectTimeoutMs,
  dialFailureOf,
  memoErrno,
  REFUSAL_MEMO_MS,
} from '../../core/wrap/connect.js';
import { connectTimeoutText, HonestConnects } from './connects.js';
import { LocalAddresses, sameAddress } from './roam.js';
import { fdStore } from './fdstore.js';
import { handOver, restoreHandover, type HandoverHost } from './handover-glue.js';
import { takeHandover, type Inherited } from './handover-store.js';

export interface WrapPeer {
  name: string;
  publicKey: Uint8Array;
  /** 0: this side dials the carrier (the pair's sequencer); 1: it accepts. */
  role: 0 | 1;
  /** Descriptors the peer's store holds open (its registers' files): out of the cap (descriptorCap). */
  descriptors?: number;
}

export interface WrapHostInfo {
  key: KeyPair;
  peers: WrapPeer[];
  /** Where the peer's spookd is (its UDP endpoint; the carrier uses the same TCP port). */
  peerAddr: (peer: string) => { address: string; port: number } | undefined;
  listen: { host: string; port: number };
  /** The peer's work budget (spookd: PROTOCOL §12.9): its carriers read only while it has some. */
  budget?: (peer: string) => CarrierBudget | undefined;
}

/**
 * An original destination with the client's uid, when the interceptor knows it (the BPF hooks
 * record it): a peer's slots are shared by user (PROTOCOL §16.5.1). Without a uid the client is
 * one unknown user, to whom only the limit applies.
 */
export type InterceptedDst = Target & { uid?: number };

/** Where intercepted connections were going: the BPF hooks, or a stand-in (tests, explicit proxies). */
export interface Interceptor {
  setPorts(tcp: number[], udp?: number[]): void;
  /** By the client's address and port (never the port alone: clients may share it). */
  originalDst(client: ClientAddr): InterceptedDst | undefined;
  /** A UDP client's original destination (kept: a connected socket is redirected only once). */
  originalUdpDst?(client: ClientAddr): InterceptedDst | undefined;
  stats(): Record<string, number>;
  close(): void;
  /** Honest connects (drivers/wrap/connects.ts): the TCP ports whose peer counts as down, and their mode. */
  setDown?(down: ReadonlyMap<number, 'direct' | 'refuse'>): void;
  /** The far side's dial to `dst` failed: connects to it fail with `errno` in the hook for `ttlMs`. */
  rememberRefusal?(dst: Target, errno: number, ttlMs: number): void;
  forgetRefusal?(dst: Target): void;
}

export interface WrapSettings {
  intercept: { host: string; port: number };
  interception: 'auto' | 'bpf' | 'off';
  windowBytes: number;
  maxConnections: number;
  silenceMs: number;
  /** UDP flows idle this long are ended (default UDP_IDLE_MS, core/wrap/udp.ts). */
  udpIdleMs?: number;
  /** Per peer and direction: buffered bytes of all its connections (default DEFAULT_MAX_BUFFERED). */
  maxBufferedBytes?: number;
  /**
   * Carrier connections not yet authenticated and adopted (handshake, then the first record):
   * at most this many, and per source address; each has handshakeTimeoutMs for both.
   */
  maxHandshakes?: number;
  maxHandshakesPerSource?: number;
  handshakeTimeoutMs?: number;
  /**
   * Carrier connections accepted per second, in all (configured peers' known addresses
   * apart) and per source address; over either, a connection is reset unread (§16.2).
   */
  handshakeRate?: number;
  handshakeRatePerSource?: number;
  /** What each peer may make this side dial (§16.5.1); absent or empty: nothing. */
  allow?: AllowRule[];
  /** The hold of a wrapper added without one (spookd: the host's TCP patience, drivers/wrap/hold.ts). */
  defaultHoldMs?: number;
  /** The connect timeout of a wrapper added without one (spookd: the host's SYN patience, drivers/wrap/hold.ts). */
  defaultConnectTimeoutMs?: number;
  /** The process's descriptor limit (default: its soft RLIMIT_NOFILE, drivers/wrap/fdlimit.ts). */
  descriptorLimit?: number;
  /**
   * Descriptors kept from wrapped connections beyond those open at start (default: every
   * handshake slot, each peer's carrier, the dials in flight of each peer this side dials, and
   * DESCRIPTOR_RESERVE).
   */
  descriptorReserve?: number;
}

/** Descriptors kept for the stores (a snapshot, a new log, a pending list), the admin socket and the listeners. */
export const DESCRIPTOR_RESERVE = 64;

/** Carrier accepts per second: in all (peers' known addresses apart), and per source address. */
export const DEFAULT_HANDSHAKE_RATE = 200;
export const DEFAULT_HANDSHAKE_RATE_PER_SOURCE = 20;
/**
 * Carrier dial attempts in flight at once: one is started every REDIAL_MAX_MS at most while the
 * carrier is down (core/wrap/redial.ts), and each lasts at most a connect and a handshake timeout.
 */
const MAX_DIALS_IN_FLIGHT = Math.ceil((2 * HANDSHAKE_TIMEOUT_MS) / REDIAL_MAX_MS) + 1;
/** As many as the BPF map of wrapped ports holds (bpf/spook_wrap.c MAX_WRAPPED_PORTS). */
export const MAX_WRAPPERS = 256;
/** Every peer is stepped at least this often (tick()), whatever its own deadlines. */
const SWEEP_MS = 1_000;
/**
 * A peer's protocol violations are logged the first, then at most one line per this long, with
 * the count left unlogged meanwhile (`suppressed`): a peer that sends undecodable records as
 * fast as its carrier goes must not flood the log. The counters (peerCounters) stay exact.
 */
export const VIOLATION_LOG_MS = 10_000;

/**
 * Why an intercepted TCP connection was reset unread (stats().refused, by these names);
 * `user-share`: its user holds half the peer's slots and only the reserve is left (§16.5.1).
 */
export type InterceptRefusal = 'no-original-destination' | 'port-not-wrapped' | SlotRefusal | DescriptorRefusal;
/** Why a datagram from a local UDP endpoint was dropped (stats().udpDrops). */
export type DatagramDrop = InterceptRefusal | FlowDrop;
/** Why an accepted carrier connection was closed before it was adopted (stats().carrierRefused). */
export type CarrierRefusal = HandshakeSlotRefusal | HandshakeRefusal | 'handshake-timeout' | 'bad-mac1' | 'handshake-failed';

interface PeerState {
  peer: WrapPeer;
  session: WrapSession;
  carrier: Carrier | undefined;
  /** When this side dials the carrier (role 0): attempts, their interval, those in flight. */
  redial: Redialer;
  conns: Map<number, LocalConn>;
  lastError: string | undefined;
  /** Times its carriers stopped reading for the peer's work budget, and for how long in all. */
  overBudget: { pauses: number; ms: number };
  /** The peer's work budget (host.budget): its carriers' reads and the work its connections cause. */
  budget: CarrierBudget | undefined;
  /** Since when it has had no carrier (from the start, if it never had one); undefined while up. */
  downSince: number | undefined;
  /** Its intercepted TCP connections the far side has not confirmed yet, with their original destination. */
  pending: ConnectDeadlines<Target>;
  /** Its last violation logged (VIOLATION_LOG_MS), and how many were not logged since. */
  violationLog: LineLimit;
  /**
   * Its last resumed connection logged, the same way: one line per connection per carrier let a
   * peer that drops and redials the carrier have a line written per connection each time.
   */
  resumeLog: LineLimit;
  /**
   * Its last `carrier up` and `carrier lost` lines, limited the same way: a peer that completes a
   * handshake and drops the carrier at once (about 40 a second per source) had two lines written per cycle.
   */
  upLog: LineLimit;
  lostLog: LineLimit;
  /**
   * A carrier up on another path (local and remote address) than the one before is news (a roam,
   * this host's address gone): its line has a limiter of its own, so a move is logged at once.
   */
  movedLog: LineLimit;
  upPath: string | undefined;
  /** Descriptors its wrapped connections hold here (local TCP sockets, UDP sockets to servers). */
  fds: number;
}

/** `suppressed` for a log line's fields: only when some were. */
const suppressedField = (n: number): { suppressed?: number } => (n > 0 ? { suppressed: n } : {});

export class WrapManager {
  /** Inside a call whose time is charged to a peer already (see charged()). */
  private charging = false;
  private readonly peers = new Map<string, PeerState>();
  readonly counters = new WrapCounters();
  private carrierServer: Server | undefined;
  private interceptServers: Server[] = [];
  private hooks: Interceptor | undefined;
  /** Why transparent interception is off, when it is. */
  interceptionError: string | undefined;
  private interceptPort = 0;
  /** The one real timer (see schedule()) and the deadline it is armed for. */
  private timer: NodeJS.Timeout | undefined;
  private timerAt = 0;
  /**
   * Each peer's next deadline (peerDeadline), and the peers whose deadline may have moved since
   * the last schedule() (every flush, dial and reload marks its peer): a turn re-keys only
   * those and a tick steps only the due ones, where a scan of every peer per turn made a
   * request through a hub with 1,000 configured peers cost 12x its CPU (bench wrap-rrcpu).
   */
  private readonly peerTimers = new DeadlineHeap<PeerState>();
  private readonly touched = new Set<PeerState>();
  /** When every peer is stepped next (at most SWEEP_MS apart): what no mark covers, a peer's address learnt (its dial). */
  private sweepAt = 0;
  /** Inside tick(): the flushes leave the re-arming to its end. */
  private ticking = false;
  private scheduleQueued = false;
  /** Peers whose local reads wait for the end of this turn to be flushed (flushSoon). */
  private readonly flushDue = new Set<PeerState>();
  /** Sockets corked until the end of this turn (carriers in flushNow, local sockets on write), each with its peer, and whether that end is queued. */
  private readonly corkedTurn = new Map<Socket, PeerState>();
  /** What to do just before uncorking a socket of corkedTurn (tcpIo: write what it gathered this turn). */
  private readonly beforeUncork = new Map<Socket, () => void>();
  private turnQueued = false;
  /** Peers with OPENs deferred for their clients' first bytes (announceNextTurn). */
  private readonly announceDue = new Set<PeerState>();
  private announceQueued = false;
  /** turnEnd() is running (its flushes are uncorked and re-armed by it), and a re-arm is due at its end. */
  private inTurnEnd = false;
  private scheduleAtTurnEnd = false;
  /** Exceptions caught by guard() (a bug in one connection's path, counted and logged). */
  internalErrors = 0;
  private stopping = false;
  private readonly bootId: bigint;
  /** What the previous process handed over (a restart through the descriptor store), until start() adopts it. */
  private inherited: Inherited | undefined;
  /** Each carried TCP connection's socket (what a handover stores). */
  private readonly tcpSockets = new WeakMap<LocalConn, Socket>();
  readonly refused: Partial<Record<InterceptRefusal, number>> = {};
  /** One refusal line per reason and local user a minute: each connect of a local process was one (~160 octets). */
  private readonly refusalWarns = new WarnLimiter();
  /** Every local socket still open (lingering ones included), so that stop() leaves none. */
  private readonly sockets = new Set<Socket>();
  /** UDP: the intercept sockets (127.0.0.1 and [::1], one port). */
  private udpIntercept: UdpSocket | undefined;
  private udpIntercept6: UdpSocket | undefined;
  /** UDP flows by client address and port and original destination. */
  private readonly udpFlows = new Map<string, { ps: PeerState; lc: LocalConn }>();
  private readonly udpSockets = new Set<UdpSocket>();
  readonly udpDrops: Partial<Record<DatagramDrop, number>> = {};
  /** Carrier connections not yet adopted, in all and by source address. */
  private readonly handshakes: HandshakeSlots;
  readonly carrierRefused: Record<CarrierRefusal, number> = {
    'too-many-handshakes': 0,
    'too-many-from-source': 0,
    'handshake-rate': 0,
    'handshake-rate-source': 0,
    'handshake-timeout': 0,
    'bad-mac1': 0,
    'handshake-failed': 0,
  };
  /** Carrier accepts per second (each may cost a DH before anything is known of it). */
  private readonly admission: HandshakeAdmission;
  /**
   * Wrapped connections stop at a process-wide cap on their descriptors (descriptorCap): peers'
   * limits bound no sum, and past RLIMIT_NOFILE the stores' opens failed with EMFILE (the pair
   * fenced, store-failed), the carriers' and the admin socket's accepts too.
   */
  private fdCap: { limit: number | undefined; others: number } | undefined;
  /** Peers this side dials the carrier of (role 0): the dials in flight the cap reserves (descriptorCap). */
  private dialledPeers = 0;
  private fdsHeld = 0;
  private peersHolding = 0;
  /** New wrapped connections refused for descriptors, both sides (the client side's are in `refused` too). */
  readonly descriptorRefused: Record<DescriptorRefusal, number> = { 'too-many-descriptors': 0, 'descriptor-share': 0 };
  /** What the connect hooks do for peers without a carrier, and the refusals they repeat. */
  private readonly connects = new HonestConnects(() => this.hooks);
  /** The serving side's dial policy: default deny. */
  readonly policy: DialPolicy;
  /** This host's addresses: a carrier whose local address is gone is replaced (drivers/wrap/roam.ts). */
  private readonly localAddrs = new LocalAddresses();

  constructor(
    private readonly host: WrapHostInfo,
    private readonly settings: WrapSettings,
    initial: WrapperSpec[],
    private readonly log: Logger,
    /** Replaces the BPF hooks (tests): given the intercept listener's port. */
    private readonly interceptor?: (interceptPort: number) => Interceptor,
  ) {
    this.policy = new DialPolicy(settings.allow ?? []);
    this.inherited = takeHandover(log);
    this.bootId = this.inherited?.state.bootId ?? randomBytes(8).readBigUInt64BE();
    this.handshakes = new HandshakeSlots(settings.maxHandshakes ?? 256, settings.maxHandshakesPerSource ?? 16);
    this.admission = new HandshakeAdmission(
      settings.handshakeRate ?? DEFAULT_HANDSHAKE_RATE,
      settings.handshakeRatePerSource ?? DEFAULT_HANDSHAKE_RATE_PER_SOURCE,
      this.now(),
    );
    for (const p of host.peers) this.setPeer(p.name, this.peerState(p));
    for (const w of initial) this.counters.add(w);
  }

  /** A peer's carrier state (at start, and for a peer added by a reload). */
  private peerState(p: WrapPeer): PeerState {
    const session = new WrapSession({
      mayDial: (target, datagram) => this.policy.allows(p.name, target, datagram ? 'udp' : 'tcp'),
      role: p.role,
      bootId: this.bootId,
      windowBytes: this.settings.windowBytes,
      maxConnections: this.settings.maxConnections,
      silenceMs: this.settings.silenceMs,
      pingMs: Math.max(100, Math.floor(this.settings.silenceMs / 3)),
      maxBufferedBytes: this.settings.maxBufferedBytes,
      udpIdleMs: this.settings.udpIdleMs,
      // A peer's OPEN meets the process-wide cap too: each dial is a descriptor here.
      // Counted at once: the OPENs of one carrier read come before any of their dials.
      mayOpen: () => {
        const why = this.descriptorRefusalOf(ps);
        if (why) this.descriptorRefused[why]++;
        else this.countFd(ps, 1); // the dial's socket (dial, dialUdp), released when it closes
        return why === undefined;
      },
    });
    const ps: PeerState = {
      peer: p,
      session,
      carrier: undefined,
      redial: new Redialer(MAX_DIALS_IN_FLIGHT),
      conns: new Map(),
      lastError: undefined,
      overBudget: { pauses: 0, ms: 0 },
      budget: undefined,
      downSince: this.now(),
      pending: new ConnectDeadlines(),
      violationLog: lineLimit(),
      resumeLog: lineLimit(),
      upLog: lineLimit(),
      lostLog: lineLimit(),
      movedLog: lineLimit(),
      upPath: undefined,
      fds: 0,
    };
    ps.budget = this.budgetOf(ps);
    return ps;
  }

  /** spookd has a new address for the peer (a reload, a DNS answer): its dial deadline is recomputed now, not at the sweep. */
  addressChanged(name: string): void {
    const ps = this.peers.get(name);
    if (!ps) return;
    this.touched.add(ps);
    this.scheduleSoon();
  }

  /** A peer added by a reload: its carrier may be dialled or accepted from now on. */
  addPeer(p: WrapPeer): void {
    if (this.peers.has(p.name)) throw new Error(`peer ${p.name} is already known to the wrappers`);
    const ps = this.peerState(p);
    this.setPeer(p.name, ps);
    // Its store's files opened after the cap was first worked out (a reload): they are out of it as
    // a peer's configured at start are (in what was open then); wrapped connections took them before.
    if (this.fdCap) this.fdCap.others += p.descriptors ?? 0;
    this.touched.add(ps);
    this.scheduleSoon();
  }

  /**
   * A peer removed by a reload: its wrapped connections are reset, its carrier closed, and a
   * carrier from its key is refused from now on (the accept looks keys up among the peers kept here).
   */
  removePeer(name: string): void {
    const ps = this.peers.get(name);
    if (!ps) return;
    ps.session.closeAll(this.now(), CloseCode.Shutdown, 'the peer was removed from the configuration');
    this.flush(ps);
    ps.carrier?.close('peer removed');
    this.peers.delete(name);
    if (ps.peer.role === 0) this.dialledPeers--;
    // Its store's files are closed next (spookd removePeer): given back.
    if (this.fdCap) this.fdCap.others = Math.max(0, this.fdCap.others - (ps.peer.descriptors ?? 0));
    this.peerTimers.delete(ps);
    this.touched.delete(ps);
  }

  private now(): number {
    return performance.now();
  }

  /**
   * The cap on descriptors held by wrapped connections: the limit, less what is open when it is
   * first needed (the stores' files, listeners, the admin socket) and a reserve for what opens
   * later, for the peers known at each call (reserve): every handshake slot, each peer's carrier, the dials in flight of each this side dials,
   * DESCRIPTOR_RESERVE for the rest.
   * No limit known (unlimited, no libc): no cap.
   */
  private descriptorCap(): number {
    if (!this.fdCap) {
      const limit = this.settings.descriptorLimit ?? descriptorLimit();
      // Those open less the wrapped connections' own (held, counted in fdsHeld already): after a
      // restart the handed-over sockets are open when this is first worked out, and counted twice
      // they lowered the cap by as many for the life of the process.
      const others = Math.max(0, (descriptorsOpen() ?? 0) - this.fdsHeld);
      this.fdCap = { limit, others };
      if (limit !== undefined)
        this.log.info(
          { limit, cap: this.capOf(this.fdCap), reserve: this.reserve() },
          'wrapped connections hold at most this many descriptors (RLIMIT_NOFILE less a reserve)',
        );
    }
    return this.capOf(this.fdCap);
  }

  private capOf(c: { limit: number | undefined; others: number }): number {
    return c.limit === undefined ? Infinity : Math.max(0, c.limit - c.others - this.reserve());
  }

  /**
   * For the peers known now, not those at the first wrapped connection: worked out once, the
   * reserve left out every peer a reload added after (100 dialled peers: 2,200 descriptors their
   * carriers and dials need went to wrapped connections) and kept a removed peer's.
   */
  private reserve(): number {
    // Dials only for the peers this side dials (role 0): reserved for all, a hub of 1,000 peers it
    // only accepts from kept 22,320, and under a limit of 4,096 the cap was 0 with nothing held.
    return (
      this.settings.descriptorReserve ??
      (this.settings.maxHandshakes ?? 256) + this.peers.size + this.dialledPeers * MAX_DIALS_IN_FLIGHT + DESCRIPTOR_RESERVE
    );
  }

  private setPeer(name: string, ps: PeerState): void {
    this.peers.set(name, ps);
    if (ps.peer.role === 0) this.dialledPeers++;
  }

  /** Whether a new wrapped connection of `ps` that costs a descriptor is refused for the process's (descriptorRefusal). */
  private descriptorRefusalOf(ps: PeerState): DescriptorRefusal | undefined {
    return descriptorRefusal(this.descriptorCap(), this.fdsHeld, ps.fds, this.peersHolding);
  }

  /** A descriptor taken (`+1`) or released (`-1`) by one of `ps`'s wrapped connections. */
  private countFd(ps: PeerState, d: 1 | -1): void {
    if (d === 1 && ps.fds === 0) this.peersHolding++;
    ps.fds += d;
    this.fdsHeld += d;
    if (d === -1 && ps.fds === 0) this.peersHolding--;
  }

  /** The connect timeout of a wrapper added without one. */
  get defaultConnectTimeoutMs(): number {
    return this.settings.defaultConnectTimeoutMs ?? defaultConnectTimeoutMs(undefined);
  }

  /** The hold of a wrapper added without one. */
  get defaultHoldMs(): number {
    return this.settings.defaultHoldMs ?? defaultHoldMs(undefined);
  }

  async start(): Promise<void> {
    tuneHeapForBulk(); // fewer full GCs under a bulk stream (drivers/wrap/heap.ts)
    // The handed-over connections first: a carrier accepted before them would answer the peer's
    // RESUMEs as ended connections (the peer resets them) and leave these held until their hold.
    if (this.inherited) restoreHandover(this.handoverHost(), this.inherited, this.log);
    this.inherited = undefined;
    this.carrierServer = createServer({ allowHalfOpen: false }, (s) => this.onCarrierSocket(s));
    await listen(this.carrierServer, this.host.listen.host, this.host.listen.port, this.log);
    let firstLingers = false; // set once listening: its accepted sockets inherit it (linger.ts)
    const first = createServer(
      { allowHalfOpen: true, noDelay: true },
      this.guard('intercept', (s: Socket) => this.onIntercepted(s, firstLingers)),
    );
    await listen(first, this.settings.intercept.host, this.settings.intercept.port, this.log);
    firstLingers = listenerResetsOnClose(first);
    this.interceptServers.push(first);
    this.interceptPort = (first.address() as AddressInfo).port;
    // The hooks send IPv6 clients to [::1] on the same port: listen there too when the host has IPv6.
    if (this.settings.intercept.host === '127.0.0.1') {
      let v6Lingers = false;
      const v6 = createServer(
        { allowHalfOpen: true, noDelay: true },
        this.guard('intercept', (s: Socket) => this.onIntercepted(s, v6Lingers)),
      );
      await listen(v6, '::1', this.interceptPort, this.log).then(
        () => ((v6Lingers = listenerResetsOnClose(v6)), this.interceptServers.push(v6)),
        (e: Error) =>
          this.log.info({ error: e.message }, 'no IPv6 intercept listener on [::1]: IPv6 clients of wrapped ports are not carried'),
      );
    }
    await this.openUdpIntercept();
    // Hooks only once something is wrapped: hosts that use no wrapper never touch the cgroup.
    if (this.wrappers.size > 0) this.openHooks();
    this.log.info(
      {
        carrier: `${this.host.listen.host}:${this.host.listen.port}`,
        intercept: `${this.settings.intercept.host}:${this.interceptPort}`,
        interception: this.hooks ? 'bpf' : 'off',
      },
      'wrappers ready',
    );
    for (const ps of this.peers.values()) this.touched.add(ps); // their first deadlines (a dial at once)
    this.sweepAt = this.now() + SWEEP_MS;
    this.schedule();
  }

  /**
   * The UDP intercept sockets: 127.0.0.1 and [::1] on one port (the hooks know one UDP proxy port,
   * and send IPv6 flows to [::1], v4-mapped ones to 127.0.0.1). Another process may hold the port
   * on ::1: then try another. Without IPv6 on loopback, IPv6 flows are not carried (logged).
   */
  private async openUdpIntercept(): Promise<void> {
    const bind = async (type: 'udp4' | 'udp6', port: number): Promise<UdpSocket> => {
      const udp = createSocket({ type, ipv6Only: type === 'udp6' });
      udp.on(
        'message',
        this.guard('UDP intercept', (msg: Buffer, rinfo: RemoteInfo) => this.onUdpIntercepted(udp, msg, rinfo)),
      );
      await new Promise<void>((resolve, reject) => {
        udp.once('error', reject);
        udp.bind(port, type === 'udp4' ? '127.0.0.1' : '::1', () => (udp.off('error', reject), resolve()));
      });
      udp.on('error', (e) => this.log.warn({ error: e.message }, 'UDP intercept socket error'));
      return udp;
    };
    for (let attempt = 0; ; attempt++) {
      const v4 = await bind('udp4', 0);
      try {
        this.udpIntercept6 = await bind('udp6', v4.address().port);
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code === 'EADDRINUSE' && attempt < 8) {
          v4.close();
          continue;
        }
        this.log.info({ error: (e as Error).message }, 'no IPv6 UDP intercept socket on [::1]: IPv6 UDP flows are not carried');
      }
      this.udpIntercept = v4;
      return;
    }
  }

  private openHooks(): void {
    if (this.hooks || this.settings.interception === 'off') return;
    try {
      this.hooks = this.interceptor
        ? this.interceptor(this.interceptPort)
        : WrapHooks.open({ proxyPort: this.interceptPort, udpProxyPort: this.udpIntercept?.address().port });
      this.applyPorts();
      this.applyDown(true);
      this.interceptionError = undefined;
    } catch (e) {
      this.interceptionError = (e as Error).message;
      const msg =
        'transparent interception is unavailable (the kernel refused the BPF cgroup hooks): wrapped ports are not intercepted; pairs, domains and carriers still run';
      if (this.settings.interception === 'bpf') throw new Error(`${msg}: ${this.interceptionError}`);
      this.log.warn({ error: this.interceptionError }, msg);
    }
  }

  /** Stop intercepting first (new connections go direct), then close what is carried. */
  async stop(opts: { handover?: boolean } = {}): Promise<void> {
    if (this.stopping) return; // idempotent
    this.stopping = true;
    if (this.timer) clearTimeout(this.timer);
    this.hooks?.close();
    this.hooks = undefined;
    // Under a service manager with a descriptor store: carried connections go to the next process.
    const store = opts.handover === false ? undefined : fdStore();
    if (store && (await handOver(this.handoverHost(), store, this.log))) return this.closeListeners();
    for (const ps of this.peers.values()) {
      ps.session.closeAll(this.now(), CloseCode.Shutdown, 'spookd is stopping');
      this.flush(ps);
      ps.carrier?.socket.end();
    }
    // A moment for the CLOSE records and the local FINs to leave, then nothing waits on a peer.
    const closed = Promise.all(
      [this.carrierServer, ...this.interceptServers].map((s) => (s ? new Promise<void>((r) => s.close(() => r())) : undefined)),
    );
    await new Promise((r) => setTimeout(r, 300));
    for (const ps of this.peers.values()) ps.carrier?.close('spookd stopped');
    for (const sock of this.sockets) sock.destroy();
    this.udpIntercept?.close();
    this.udpIntercept6?.close();
    for (const u of this.udpSockets) u.close();
    this.udpSockets.clear();
    await closed;
  }

  /** Stop() after a handover: the listeners and what was not handed over. */
  private async closeListeners(): Promise<void> {
    const closed = [this.carrierServer, ...this.interceptServers].map((s) =>
      s ? new Promise<void>((r) => s.close(() => r())) : undefined,
    );
    for (const ps of this.peers.values()) ps.carrier?.close('spookd stopped');
    for (const sock of this.sockets) sock.destroy();
    this.udpIntercept?.close();
    this.udpIntercept6?.close();
    for (const u of this.udpSockets) u.close();
    this.udpSockets.clear();
    await Promise.all(closed);
  }

  /** What a restart's handover (drivers/wrap/handover-glue.ts) needs of this manager. */
  private handoverHost(): HandoverHost {
    return {
      bootId: this.bootId,
      now: () => this.now(),
      peers: () =>
        [...this.peers.values()].map((ps) => ({
          name: ps.peer.name,
          session: ps.session,
          conns: ps.conns,
          flush: () => this.flush(ps),
          dropCarrier: (why: string) => ps.carrier?.close(why),
        })),
      socketOf: (lc) => this.tcpSockets.get(lc),
      adopt: (p, id, socket, wrapPort, local) => {
        const ps = this.peers.get(p.name)!;
        const lc = this.attach(ps, id, socket, wrapPort);
        lc.connected = true;
        const w = this.wrappers.get(wrapperKey('tcp', wrapPort)); // only TCP connections are handed over
        if (local && w && !isDatagram(w.protocol)) this.counters.opened(w);
        // Not confirmed by the far side yet: its connect timeout runs on here (from the restart).
        const c = ps.session.conns.get(id);
        if (local && c?.state === 'opening')
          ps.pending.add(id, this.now() + (w?.connectTimeoutMs ?? this.defaultConnectTimeoutMs), c.target);
        return lc;
      },
    };
  }

  // ---- wrappers (config and admin) ----

  add(spec: WrapperSpec): void {
    const transport = transportOf(spec.protocol);
    const had = this.wrappers.get(wrapperKey(transport, spec.port));
    if (had) throw new Error(`${transport} port ${spec.port} is already wrapped (${had.protocol}, to ${had.peer}); remove it first`);
    if (!this.peers.has(spec.peer)) throw new Error(`no peer named ${spec.peer}`);
    if (this.wrappers.size >= MAX_WRAPPERS) throw new Error(`at most ${MAX_WRAPPERS} ports can be wrapped`);
    this.counters.add(spec);
    this.openHooks();
    this.applyPorts();
    this.applyDown();
    this.log.info({ ...spec }, 'wrapper added');
  }

  /**
   * Stop intercepting the port for `transport` (optional while only one transport of the port is
   * wrapped); connections already carried are reset (wrapper-removed). Returns the transport removed.
   */
  remove(port: number, transport?: WrapTransport): WrapTransport {
    const key = this.wrapperToRemove(port, transport);
    const w = this.wrappers.get(key)!;
    this.wrappers.delete(key);
    const datagram = isDatagram(w.protocol);
    this.applyPorts();
    this.applyDown();
    for (const ps of this.peers.values()) {
      ps.session.closeAll(
        this.now(),
        CloseCode.WrapperRemoved,
        `the wrapper for ${key} was removed`,
        (c) => c.local && c.wrapPort === port && c.datagram === datagram,
      );
      this.flush(ps);
    }
    this.log.info({ port, transport: transportOf(w.protocol) }, 'wrapper removed');
    return transportOf(w.protocol);
  }

  /**
   * Change what a wrapper gives the connections opened from now on (a reload): hold, delta mode,
   * what connect() does while the peer is down, connect timeout. Connections already open keep
   * what they opened with; none is reset.
   */
  update(key: WrapperKey, change: Pick<WrapperSpec, 'holdMs' | 'delta' | 'whenDown' | 'connectTimeoutMs'>): void {
    const w = this.wrappers.get(key);
    if (!w) throw new Error(`${key} is not wrapped`);
    Object.assign(w, change);
    this.applyDown();
    this.log.info({ key, ...change }, 'wrapper changed');
  }

  /** Replace what peers may make this side dial (§16.5.1; a reload): the next OPEN is checked against the new rules. */
  setAllow(rules: AllowRule[]): void {
    this.policy.setRules(rules);
    this.log.info({ rules: rules.length }, 'dial policy replaced');
  }

  private wrapperToRemove(port: number, transport: WrapTransport | undefined): WrapperKey {
    const wrapped = (): string => [...this.wrappers.keys()].join(', ') || 'none';
    if (transport) {
      const key = wrapperKey(transport, port);
      if (!this.wrappers.has(key)) throw new Error(`${transport} port ${port} is not wrapped (wrapped: ${wrapped()})`);
      return key;
    }
    const keys = (['tcp', 'udp'] as const).map((t) => wrapperKey(t, port)).filter((k) => this.wrappers.has(k));
    if (keys.length === 0) throw new Error(`port ${port} is not wrapped (wrapped: ${wrapped()})`);
    if (keys.length > 1) throw new Error(`port ${port} is wrapped for both tcp and udp: say which transport to remove`);
    return keys[0];
  }

  /**
   * An event handler that logs and counts an unexpected exception instead of letting it
   * take the daemon down: a bug in one connection's path must not end every pair.
   */
  private guard<A extends unknown[]>(what: string, fn: (...a: A) => void): (...a: A) => void {
    return (...a: A) => {
      try {
        fn(...a);
      } catch (e) {
        this.internalErrors++;
        this.log.error({ where: what, err: e }, 'internal error in the wrappers (the daemon goes on)');
      }
    };
  }

  /** Tell the hooks which ports are wrapped, TCP and UDP apart. */
  private applyPorts(): void {
    const ws = [...this.wrappers.values()];
    this.hooks?.setPorts(
      ws.filter((w) => !isDatagram(w.protocol)).map((w) => w.port),
      ws.filter((w) => isDatagram(w.protocol)).map((w) => w.port),
    );
  }

  /**
   * Tell the hooks which TCP-wrapped ports' peers count as down (core/wrap/connect.ts: no carrier
   * for DOWN_GRACE_MS) and what their connects do; a `hold` wrapper is never listed (redirected).
   */
  private applyDown(force = false): void {
    const now = this.now();
    const down = new Map<number, 'direct' | 'refuse'>();
    for (const w of this.wrappers.values()) {
      const mode = w.whenDown ?? 'hold';
      if (mode === 'hold' || isDatagram(w.protocol)) continue;
      if (countsDown(this.peers.get(w.peer)?.downSince, now)) down.set(w.port, mode);
    }
    this.connects.setDown(down, force);
  }

  get wrappers(): Map<WrapperKey, WrapperCounters> {
    return this.counters.wrappers;
  }

  get protocols(): WrapCounters['protocols'] {
    return this.counters.protocols;
  }

  list(): WrapperEntry[] {
    return [...this.wrappers.values()].map((w) => ({
      protocol: w.protocol,
      transport: transportOf(w.protocol),
      port: w.port,
      peer: w.peer,
      holdMs: w.holdMs,
      delta: w.delta ?? false,
      whenDown: w.whenDown ?? 'hold',
      connectTimeoutMs: w.connectTimeoutMs ?? this.defaultConnectTimeoutMs,
      active: w.active,
      connections: w.connections,
    }));
  }

  stats(): WrapStatsResult {
    return {
      interception: this.hooks ? 'bpf' : 'off',
      interceptionError: this.interceptionError ?? null,
      intercept: `${this.settings.intercept.host}:${this.interceptPort}`,
      hooks: this.hooks?.stats() ?? null,
      refused: this.refused,
      descriptors: {
        limit: this.fdCap?.limit ?? null,
        cap: this.fdCap ? this.capOf(this.fdCap) : null,
        held: this.fdsHeld,
        refused: this.descriptorRefused,
      },
      connects: this.connects.counts,
      carrierPending: this.handshakes.held,
      carrierRefused: this.carrierRefused,
      udpDrops: this.udpDrops,
      internalErrors: this.internalErrors,
      udpFlows: this.udpFlows.size,
      udpIntercept: this.udpIntercept ? `127.0.0.1:${this.udpIntercept.address().port}` : null,
      wrappers: [...this.wrappers.values()].map((w) => ({ ...w, transport: transportOf(w.protocol) })),
      protocols: this.protocols.toJSON(),
      peers: [...this.peers.values()].map((ps) => ({
        peer: ps.peer.name,
        carrier: ps.carrier ? 'up' : ps.redial.dialing > 0 ? 'dialing' : 'down',
        carrierBytesOut: ps.carrier?.bytesOut ?? 0,
        carrierBytesIn: ps.carrier?.bytesIn ?? 0,
        carrierCipher: ps.carrier?.cipher ?? null,
        lastError: ps.lastError ?? null,
        connections: ps.session.conns.size,
        dialsRefused: this.policy.refused.get(ps.peer.name) ?? 0,
        overBudgetPauses: ps.overBudget.pauses,
        overBudgetPausedMs: ps.overBudget.ms,
        bufferedIn: ps.session.bufferedIn,
        bufferedOut: ps.session.bufferedOut,
        maxBufferedBytes: ps.session.maxBuffered,
        controlQueued: ps.session.controlQueued,
        carrierInputPaused: ps.carrier?.inputPaused ?? false,
        ...ps.session.counters,
      })),
    };
  }

  /** The dial policy per peer and its refusals (`spook wrap policy`). */
  policyView(): ReturnType<DialPolicy['toJSON']> {
    return this.policy.toJSON([...this.peers.keys()]);
  }

  /** The WRAP counters of each peer's session (cheap: no BPF map reads, unlike stats()). */
  peerCounters(): ({ peer: string } & WrapSession['counters'])[] {
    return [...this.peers.values()].map((ps) => ({ peer: ps.peer.name, ...ps.session.counters }));
  }

  connections(): WrapConnection[] {
    const out: WrapConnection[] = [];
    const now = this.now();
    for (const ps of this.peers.values()) {
      for (const c of ps.session.conns.values()) {
        const lc = ps.conns.get(c.id);
        out.push({
          peer: ps.peer.name,
          conn: c.id,
          side: c.local ? 'client' : 'server',
          target: `${c.target.family === 6 ? `[${c.target.address}]` : c.target.address}:${c.target.port}`,
          protocol: lc?.protocol ?? 'unrecognised',
          state: c.holdUntil !== undefined ? 'held' : c.state,
          heldForMs: c.heldSince !== undefined ? Math.round(now - c.heldSince) : 0,
          sent: c.send.end,
          received: c.recv.received,
          buffered: c.send.buffered,
          outages: c.outages,
          ageMs: Math.round(now - c.openedAt),
        });
      }
    }
    return out;
  }

  // ---- interception (client side) ----

  /** `lingers`: the socket inherited SO_LINGER 0 from its listener (else attach sets it). */
  private onIntercepted(socket: Socket, lingers = false): void {
    const now = this.now();
    const dst = this.hooks?.originalDst({ address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0 });
    const refuse = (why: InterceptRefusal): void => {
      this.refused[why] = (this.refused[why] ?? 0) + 1;
      const suppressed = this.refusalWarns.admit(now, `${why}:${dst?.uid ?? ''}`);
      if (suppressed !== undefined)
        this.log.warn(
          { from: `${socket.remoteAddress}:${socket.remotePort}`, uid: dst?.uid, why, ...(suppressed > 0 ? { suppressed } : {}) },
          'intercepted connection refused',
        );
      socket.resetAndDestroy();
    };
    if (!dst) return refuse('no-original-destination');
    const w = this.wrappers.get(wrapperKey('tcp', dst.port));
    if (!w) return refuse('port-not-wrapped');
    const ps = this.peers.get(w.peer)!;
    // Its OPEN waits for the next poll, which hands over what the client wrote on connecting:
    // OPEN and the first DATA then leave in one carrier write (announceNextTurn).
    const target: Target = { family: dst.family, address: dst.address, port: dst.port };
    const full = ps.session.slotRefusal(dst.uid);
    if (full) return refuse(full);
    const noFd = this.descriptorRefusalOf(ps);
    if (noFd) {
      this.descriptorRefused[noFd]++;
      return refuse(noFd);
    }
    const id = ps.session.openLocal(now, w.port, target, w.holdMs, w.delta ?? false, false, true, dst.uid);
    if (id === undefined) return refuse('too-many-connections');
    this.counters.opened(w);
    ps.pending.add(id, now + (w.connectTimeoutMs ?? this.defaultConnectTimeoutMs), dst);
    this.attach(ps, id, socket, w.port, lingers);
    this.ensureCarrier(ps);
    this.announceNextTurn(ps);
    this.flush(ps);
  }

  /**
   * The OPENs deferred this turn are sent in the next turn's check phase: an immediate queued
   * from inside the check phase runs in the next iteration's, after a poll that does not block
   * (an immediate is pending) and hands over the clients' first bytes, which announce their
   * connection at once (WrapSession.localData). The session's coalesce timer is the backstop.
   */
  private announceNextTurn(ps: PeerState): void {
    this.announceDue.add(ps);
    if (this.announceQueued) return;
    this.announceQueued = true;
    setImmediate(() =>
      setImmediate(() => {
        this.announceQueued = false;
        const due = [...this.announceDue];
        this.announceDue.clear();
        for (const p of due)
          this.guard('deferred open', () => {
            p.session.announceDeferred(this.now());
            this.flushDue.add(p);
          })();
        this.turnEnd();
      }),
    );
  }

  // ---- local sockets (both sides) ----

  /** `counted`: its descriptor was counted when the peer's OPEN was admitted (mayOpen). */
  private attach(ps: PeerState, id: number, socket: Socket, wrapPort: number, lingers = false, counted = false): LocalConn {
    const local = ps.session.conns.get(id)?.local ?? true;
    const lc = this.localConn(ps, id, () => tcpIo(socket, (s, before) => this.corkTurn(ps, s, before)), local, wrapPort, false);
    this.tcpSockets.set(lc, socket);
    socket.setNoDelay(true);
    // Should spookd die, the kernel resets the socket rather than ending it cleanly (§16.5.7).
    if (local && !lingers) resetOnClose(socket);
    // A socket whose connection ended must never act on a later connection that reuses its id.
    const current = (): boolean => ps.conns.get(id) === lc;
    socket.on(
      'data',
      this.guard('local socket', (chunk: Buffer) => {
        if (!current()) return void socket.pause();
        this.counters.observe(lc, local ? 0 : 1, chunk);
        if (!ps.session.localData(this.now(), id, chunk)) socket.pause();
        this.flushSoon(ps);
      }),
    );
    socket.on('end', () => {
      if (!current()) return;
      ps.session.localEnd(this.now(), id);
      this.flush(ps);
    });
    socket.on('error', (e) => {
      if (!current() || !lc.connected || !ps.session.conns.has(id)) return;
      ps.pending.settle(id); // a reset ends it without a close event
      ps.session.localReset(this.now(), id, e.message);
      this.finish(ps, lc, local ? 'client-reset' : 'server-reset');
      this.flush(ps);
    });
    this.sockets.add(socket);
    if (!counted) this.countFd(ps, 1);
    socket.on('close', () => {
      this.countFd(ps, -1);
      this.sockets.delete(socket);
      if (ps.conns.get(id) === lc && !ps.session.conns.has(id)) ps.conns.delete(id);
    });
    return lc;
  }

  private localConn(
    ps: PeerState,
    id: number,
    makeIo: (lc: LocalConn) => LocalIo,
    local: boolean,
    wrapPort: number,
    datagram: boolean,
  ): LocalConn {
    const lc = {
      id,
      datagram,
      local,
      connected: local,
      wrapPort,
      first: [[], []],
      firstLen: [0, 0],
      protocol: undefined,
      bytes: [0, 0],
    } as Omit<LocalConn, 'io'> as LocalConn;
    lc.io = makeIo(lc);
    ps.conns.set(id, lc);
    return lc;
  }

  // ---- UDP flows ----

  /**
   * A datagram from an intercepted UDP client. A flow is one client port and one original
   * destination (looked up for every datagram: an unconnected socket may send to several);
   * its first datagram opens a connection, and so does one that finds its flow ending.
   */
  private onUdpIntercepted(via: UdpSocket, msg: Buffer, rinfo: RemoteInfo): void {
    const dst = this.hooks?.originalUdpDst?.({ address: rinfo.address, port: rinfo.port });
    if (!dst) return this.udpDrop('no-original-destination');
    const key = `${rinfo.address}:${rinfo.port}>${dst.address}:${dst.port}`;
    let flow = this.udpFlows.get(key);
    if (flow && flow.ps.session.conns.get(flow.lc.id)?.send.ended) {
      // Ending (idle): the datagram starts a new flow; the old one completes on its own.
      this.udpFlows.delete(key);
      flow = undefined;
    }
    if (!flow) {
      const w = this.wrappers.get(wrapperKey('udp', dst.port));
      if (!w) return this.udpDrop('port-not-wrapped');
      const ps = this.peers.get(w.peer)!;
      const full = ps.session.slotRefusal(dst.uid);
      if (full) return this.udpDrop(full);
      const target: Target = { family: dst.family, address: dst.address, port: dst.port };
      const id = ps.session.openLocal(this.now(), w.port, target, w.holdMs, false, true, false, dst.uid);
      if (id === undefined) return this.udpDrop('too-many-connections');
      this.counters.opened(w);
      const reply = (d: Buffer, sent: () => void): void => void via.send(d, rinfo.port, rinfo.address, () => sent());
      const lc = this.localConn(
        ps,
        id,
        (l) => this.udpIo(ps, l, reply, () => this.udpFlows.get(key) === flow && this.udpFlows.delete(key)),
        true,
        w.port,
        true,
      );
      flow = { ps, lc };
      this.udpFlows.set(key, flow);
      this.ensureCarrier(ps);
    }
    this.udpIn(flow.ps, flow.lc, msg);
  }

  private udpDrop(why: DatagramDrop): void {
    this.udpDrops[why] = (this.udpDrops[why] ?? 0) + 1;
  }

  /**
   * One end of a UDP flow: datagrams out of the peer's stream are sent, and the bytes are
   * acknowledged once every whole datagram in them has been (a partial one waits in the
   * deframer, at most 64 KiB).
   */
  private udpIo(ps: PeerState, lc: LocalConn, send: (d: Buffer, sent: () => void) => void, forget: () => void): LocalIo {
    const deframer = new DatagramDeframer();
    return {
      write: (data, done) => {
        let waiting = 1;
        const one = (): void => void (--waiting === 0 && done(data.length));
        deframer.push(data, (d) => {
          this.counters.observe(lc, lc.local ? 1 : 0, d);
          waiting++;
          send(d, one);
        });
        one();
      },
      // A flow's peer ended its direction (idle): end ours too, and the connection completes.
      end: () => ps.session.localEnd(this.now(), lc.id),
      resume: () => {},
      pause: () => {}, // datagrams that do not fit are dropped, not paused
      close: forget,
    };
  }

  /** A datagram from the local endpoint: into the stream, or dropped (window full, flow ended, too big). */
  private udpIn(ps: PeerState, lc: LocalConn, msg: Buffer): void {
    if (ps.conns.get(lc.id) !== lc) return;
    const dropped = ps.session.localDatagram(this.now(), lc.id, msg);
    if (dropped) return this.udpDrop(dropped);
    this.counters.observe(lc, lc.local ? 0 : 1, msg);
    this.flush(ps);
  }

  /** Server side of a UDP flow: a socket connected to the real server. */
  private dialUdp(ps: PeerState, id: number, target: Target, wrapPort: number): void {
    const sock = createSocket(target.family === 6 ? 'udp6' : 'udp4');
    this.udpSockets.add(sock); // its descriptor counted when the OPEN was admitted (mayOpen)
    const close = (): void => {
      if (!this.udpSockets.delete(sock)) return;
      this.countFd(ps, -1);
      sock.close();
    };
    // Datagrams that arrive before the socket is connected wait for it; they are acknowledged
    // only when sent, so the window bounds them.
    const early: [Buffer, () => void][] = [];
    const send = (d: Buffer, sent: () => void): void => {
      if (lc.connected) sock.send(d, () => sent());
      else early.push([Buffer.from(d), sent]);
    };
    const lc = this.localConn(ps, id, (l) => this.udpIo(ps, l, send, close), false, wrapPort, true);
    sock.on(
      'message',
      this.guard('UDP flow', (msg: Buffer) => this.udpIn(ps, lc, msg)),
    );
    sock.on('error', (e) => {
      if (ps.conns.get(id) !== lc) return;
      if (!lc.connected) ps.session.dialFailed(this.now(), id, `${target.address}:${target.port}: ${e.message}`);
      else ps.session.localReset(this.now(), id, e.message);
      this.finish(ps, lc, 'server-reset');
      lc.io.close(false);
      this.flush(ps);
    });
    sock.connect(target.port, target.address, () => {
      if (ps.conns.get(id) !== lc) return;
      lc.connected = true;
      for (const [d, sent] of early.splice(0)) sock.send(d, () => sent());
      ps.session.dialed(this.now(), id);
      this.flush(ps);
    });
  }

  private finish(ps: PeerState, lc: LocalConn, reason: ConnEnd): void {
    this.counters.ended(lc, reason);
    ps.conns.delete(lc.id);
  }

  // ---- server side ----

  private dial(ps: PeerState, id: number, target: Target, wrapPort: number): void {
    const socket = connect({ host: target.address, port: target.port, family: target.family, allowHalfOpen: true, noDelay: true });
    const lc = this.attach(ps, id, socket, wrapPort, false, true);
    socket.once('connect', () => {
      if (ps.conns.get(id) !== lc) return;
      resetOnClose(socket);
      lc.connected = true;
      ps.session.dialed(this.now(), id);
      this.flush(ps);
    });
    socket.once('error', (e: NodeJS.ErrnoException) => {
      if (lc.connected || ps.conns.get(id) !== lc) return;
      // The errno's name first (§16.5.1): the client side repeats a refusal to the next connects.
      ps.session.dialFailed(this.now(), id, `${e.code ?? 'EIO'} ${target.address}:${target.port}: ${e.message}`);
      ps.conns.delete(lc.id);
      this.flush(ps);
    });
  }

  // ---- the carrier ----

  /**
   * Start a carrier dial attempt when one is due. Attempts overlap (core/wrap/redial.ts): one
   * whose SYN died in an outage still waits for its retransmissions when the next starts, and
   * the first to complete its handshake becomes the carrier; the others are closed unused.
   */
  private ensureCarrier(ps: PeerState, on: 'timer' | 'peer-heard' = 'timer'): void {
    const now = this.now();
    this.touched.add(ps); // its dial deadline may move
    if (this.stopping || (ps.carrier && !this.carrierMoved(ps)) || ps.peer.role !== 0 || !ps.redial.due(now)) return;
    const addr = this.host.peerAddr(ps.peer.name);
    if (!addr) return;
    if (ps.carrier)
      this.log.info(
        { peer: ps.peer.name, from: ps.carrier.socket.remoteAddress, to: addr.address, on },
        'the peer moved: dialling its new address',
      );
    ps.redial.started(now);
    dialCarrier(addr.address, addr.port, this.host.key, ps.peer.publicKey)
      .then((c) => {
        ps.redial.finished();
        if (this.stopping) return c.close('spookd stopping');
        if (this.peers.get(ps.peer.name) !== ps) return c.close('peer removed');
        // Another attempt won: this one never sent a record, so the peer never adopted it. A carrier
        // to an address the peer has left is replaced (adopt() closes it; the connections resume).
        if (ps.carrier && !this.carrierMoved(ps)) return c.close('another dial attempt is the carrier');
        this.adopt(ps, c);
      })
      .catch((e: Error) => {
        ps.redial.finished();
        if (!ps.carrier) ps.lastError = e.message;
        this.log.debug({ peer: ps.peer.name, error: e.message }, 'carrier dial failed');
        this.touched.add(ps);
        this.scheduleSoon();
      });
  }

  /**
   * An authenticated ETCP packet from the peer (spookd, after the pair's roaming): its path works
   * now, perhaps from a new address. As the dialling side, with the carrier down or dialled to
   * an address the peer has left, start an attempt at once (core/wrap/redial.ts, heard():
   * rate-limited) rather than at the next redial interval or the silence timer.
   */
  peerHeard(name: string): void {
    const ps = this.peers.get(name);
    if (!ps || this.stopping || ps.peer.role !== 0 || (ps.carrier && !this.carrierMoved(ps))) return;
    ps.redial.heard(this.now());
    this.ensureCarrier(ps, 'peer-heard');
    this.scheduleSoon();
  }

  /** The carrier goes to an address the peer no longer sends from (it roamed, §12.6). */
  private carrierMoved(ps: PeerState): boolean {
    const at = this.host.peerAddr(ps.peer.name)?.address;
    const remote = ps.carrier?.socket.remoteAddress;
    return at !== undefined && remote !== undefined && !sameAddress(at, remote);
  }

  /**
   * The dialling side's carriers whose local address is gone (this host's address changed):
   * closed at once and redialled from the new one, without waiting for the silence timer.
   */
  private checkLocalAddresses(now: number): void {
    if (!this.localAddrs.due(now)) return;
    for (const ps of this.peers.values()) {
      const local = ps.peer.role === 0 ? ps.carrier?.socket.localAddress : undefined;
      if (local === undefined || !this.localAddrs.gone(now, local)) continue;
      this.log.info({ peer: ps.peer.name, local }, 'the carrier local address is gone: redialling');
      ps.carrier!.close(`local address ${local} is gone`);
      ps.redial.heard(now);
    }
  }

  /**
   * An accepted carrier connection. Until it is authenticated and has sent its first record it
   * holds a slot, in all and for its source address: over either limit it is closed at once,
   * so unauthenticated connections can never use up the descriptors (the admin socket's too).
   */
  private onCarrierSocket(socket: Socket): void {
    const source = socket.remoteAddress ?? '?';
    // Slots first: a connection refused for them takes nothing from the rate buckets.
    const refused = this.handshakes.full(source) ?? this.admission.admit(this.now(), source, this.isPeerAddress(source));
    if (refused) {
      this.carrierRefused[refused]++;
      return void socket.resetAndDestroy();
    }
    this.handshakes.take(source);
    let held = true;
    const release = (): void => {
      if (!held) return;
      held = false;
      this.handshakes.release(source);
    };
    socket.once('close', release);
    const timeoutMs = this.settings.handshakeTimeoutMs ?? HANDSHAKE_TIMEOUT_MS;
    const started = this.now();
    acceptCarrier(
      socket,
      this.host.key,
      (key) => [...this.peers.values()].find((p) => Buffer.from(p.peer.publicKey).equals(Buffer.from(key))),
      timeoutMs,
    )
      .then(({ carrier, peer: ps }) => {
        if (this.stopping) return carrier.close('spookd stopping');
        if (this.peers.get(ps.peer.name) !== ps) return carrier.close('peer removed'); // by a reload, during the handshake
        // Adopt only on the first authenticated record: a replayed handshake never displaces a live carrier.
        let adopted = false;
        const giveUp = setTimeout(
          () => {
            if (adopted) return;
            this.carrierRefused['handshake-timeout']++;
            carrier.close('no record after the handshake');
          },
          Math.max(0, timeoutMs - (this.now() - started)),
        );
        carrier.budget = ps.budget;
        carrier.start({
          onRecord: (parts) => {
            if (!adopted) {
              adopted = true;
              clearTimeout(giveUp);
              release();
              // Removed (or rekeyed) by a reload since its handshake: its key is no longer a peer's.
              if (this.peers.get(ps.peer.name) !== ps) return carrier.close('peer removed');
              this.adopt(ps, carrier, true);
            }
            ps.session.handleRecordParts(this.now(), parts);
            this.flush(ps);
          },
          onClose: () => clearTimeout(giveUp),
          onDrain: () => {},
          acceptMore: () => ps.session.carrierUp && !ps.session.backlogged,
        });
      })
      .catch((e: Error) => {
        const why = e instanceof CarrierError ? e.reason : undefined;
        this.carrierRefused[why === 'timeout' ? 'handshake-timeout' : why === 'bad-mac1' ? 'bad-mac1' : 'handshake-failed']++;
        this.log.debug({ from: `${socket.remoteAddress}:${socket.remotePort}`, error: e.message }, 'carrier handshake refused');
      });
  }

  /** The peer's budget for its carriers and deliveries, counting the pauses it imposes. */
  private budgetOf(ps: PeerState): CarrierBudget | undefined {
    const b = this.host.budget?.(ps.peer.name);
    if (!b) return undefined;
    return {
      charge: (ms) => b.charge(ms),
      paused: (ms) => {
        ps.overBudget.pauses++;
        ps.overBudget.ms += ms;
      },
    };
  }

  /** Whether `source` is where a configured peer is known to be (an IPv4-mapped address as its IPv4). */
  private isPeerAddress(source: string): boolean {
    const plain = source.startsWith('::ffff:') ? source.slice(7) : source;
    for (const ps of this.peers.values()) {
      const at = this.host.peerAddr(ps.peer.name)?.address;
      if (at !== undefined && (at === source || at === plain)) return true;
    }
    return false;
  }

  private adopt(ps: PeerState, c: Carrier, started = false): void {
    const old = ps.carrier;
    ps.carrier = c;
    if (old) {
      ps.session.onCarrierDown(this.now());
      old.close('superseded by a new carrier');
    }
    const handlers = {
      onRecord: (parts: Buffer[]) => {
        // The carrier charges the whole read (opening and handling its records) itself.
        const outer = this.charging;
        this.charging = true;
        try {
          ps.session.handleRecordParts(this.now(), parts);
          this.flush(ps);
        } finally {
          this.charging = outer;
        }
      },
      onClose: (why: string) => {
        if (ps.carrier !== c) return;
        ps.carrier = undefined;
        ps.lastError = why;
        ps.downSince = this.now();
        ps.session.onCarrierDown(this.now());
        ps.redial.lost(this.now());
        const suppressed = admitLine(ps.lostLog, this.now(), VIOLATION_LOG_MS);
        if (suppressed !== undefined) this.log.info({ peer: ps.peer.name, why, ...suppressedField(suppressed) }, 'carrier lost');
        this.flush(ps);
        this.ensureCarrier(ps);
      },
      onDrain: () => this.flush(ps),
      // Replies the peer does not read pile up: stop reading its records until they drain (§16.5.6).
      acceptMore: () => ps.session.carrierUp && !ps.session.backlogged,
    };
    c.budget = ps.budget;
    if (started) Object.assign(c, handlers);
    else c.start(handlers);
    ps.session.onCarrierUp(this.now());
    ps.lastError = undefined;
    ps.redial.up();
    ps.downSince = undefined;
    this.applyDown();
    const path = `${c.socket.localAddress}>${c.socket.remoteAddress}`;
    const moved = ps.upPath !== undefined && ps.upPath !== path;
    ps.upPath = path;
    const suppressed = admitLine(moved ? ps.movedLog : ps.upLog, this.now(), VIOLATION_LOG_MS);
    if (suppressed !== undefined)
      this.log.info(
        {
          peer: ps.peer.name,
          remote: `${c.socket.remoteAddress}:${c.socket.remotePort}`,
          cipher: c.cipher,
          ...suppressedField(suppressed),
        },
        'carrier up',
      );
    this.flush(ps);
  }

  // ---- honest connects ----

  /**
   * Connections still unconfirmed at their connect timeout are reset, as the kernel would end a
   * direct connect() whose SYN went unanswered (ETIMEDOUT). Confirmed ones left `pending` on
   * their `opened` event, ended ones on `close` or `done`.
   */
  private expireConnects(ps: PeerState, now: number): void {
    if (ps.pending.size === 0) return;
    for (const { conn } of ps.pending.expired(now)) {
      const c = ps.session.conns.get(conn);
      if (!c || c.state !== 'opening') continue;
      this.connects.timedOut++;
      ps.session.closeAll(now, CloseCode.DialFailed, connectTimeoutText(c.target, now - c.openedAt), (x) => x.id === conn);
    }
  }

  // ---- the loop ----

  /**
   * Run work done for `ps` and charge its time to the peer's budget (§12.9), unless an outer
   * caller already charges it (a carrier read, another charged call): every path that makes
   * records for a peer, its downloads' local reads included, is the peer's work.
   */
  private charged(ps: PeerState, fn: () => void): void {
    if (this.charging || !ps.budget) return fn();
    this.charging = true;
    const t0 = performance.now();
    try {
      fn();
    } finally {
      this.charging = false;
      ps.budget.charge(performance.now() - t0);
    }
  }

  /**
   * Flush once this turn's socket reads are in (libuv hands several to one poll): a bulk
   * stream's 64 KiB reads then leave as records of up to MAX_DATA, one AEAD set-up and one
   * write each, instead of one per read. The check phase runs right after the reads: no delay.
   */
  private flushSoon(ps: PeerState): void {
    this.flushDue.add(ps);
    this.endOfTurn();
  }

  /** Peers to flush once the current callbacks are done (flushAfterTicks). */
  private readonly drainedDue = new Set<PeerState>();

  /**
   * Flush after the write callbacks queued with this one (a microtask runs after the current
   * nextTick queue): in the same turn, with no extra wake-up of the event loop.
   */
  private flushAfterTicks(ps: PeerState): void {
    if (this.drainedDue.size === 0) {
      queueMicrotask(() => {
        const due = [...this.drainedDue];
        this.drainedDue.clear();
        for (const p of due) this.guard('flush after writes', () => this.flush(p))();
      });
    }
    this.drainedDue.add(ps);
  }

  /**
   * Cork a socket of `ps` until the end of this turn (its writes of the turn leave as one writev);
   * `beforeUncork` is called just before it is uncorked (a local connection's gathered pieces).
   */
  private corkTurn(ps: PeerState, s: Socket, beforeUncork?: () => void): void {
    if (beforeUncork) this.beforeUncork.set(s, beforeUncork);
    if (this.corkedTurn.has(s)) return;
    s.cork();
    this.corkedTurn.set(s, ps);
    this.endOfTurn();
  }

  /**
   * Uncork this turn's sockets, each peer's in a row (its carrier's and its local connections'),
   * the time charged to that peer (§12.9): the writes are its work, and on loopback or a veth the
   * kernel delivers inside them (a wrapper flood's writes to its 64 local connections were the
   * largest part of its uncharged cost). What a socket could not take then leaves from its write
   * completion later, uncharged (a local reader that lags: documented in SECURITY.md).
   */
  private uncorkTurn(): void {
    const byPeer = new Map<PeerState, Socket[]>();
    for (const [s, ps] of this.corkedTurn) {
      const list = byPeer.get(ps);
      if (list) list.push(s);
      else byPeer.set(ps, [s]);
    }
    this.corkedTurn.clear();
    for (const [ps, sockets] of byPeer) {
      const t0 = performance.now();
      // One socket's fault must leave no other corked for good (its writes would never leave).
      for (const s of sockets) {
        const before = this.beforeUncork.get(s);
        this.beforeUncork.delete(s);
        if (before) this.guard('gathered', before)();
        this.guard('uncork', () => s.uncork())();
      }
      if (!this.charging) ps.budget?.charge(performance.now() - t0);
    }
  }

  /** At the end of this turn (check phase): the due flushes, then every corked socket's one write. */
  private endOfTurn(): void {
    if (this.turnQueued) return;
    this.turnQueued = true;
    setImmediate(() => this.turnEnd());
  }

  /**
   * The due flushes, then every corked carrier's one write (again harmlessly if run twice in a
   * check phase). The flushes' own end-of-turn and re-arming are done here, not in immediates
   * of their own: queued from the check phase, those would run one loop iteration later, and
   * cost an iteration (a poll) each turn.
   */
  private turnEnd(): void {
    this.turnQueued = true; // endOfTurn() from the flushes below: this call uncorks them
    this.inTurnEnd = true;
    const due = [...this.flushDue];
    this.flushDue.clear();
    try {
      // Contained per peer, as the socket handlers that call this are (guard()): a throw here would
      // otherwise end the daemon, and leave the set non-empty so that no deferred flush ever ran again.
      for (const p of due) this.guard('deferred flush', () => this.flush(p))();
    } finally {
      this.inTurnEnd = false;
      this.turnQueued = false;
      this.uncorkTurn();
      if (this.scheduleAtTurnEnd) {
        this.scheduleAtTurnEnd = false;
        this.schedule();
      }
    }
  }

  /** Move records to the carrier while it takes them, then act on the session's events. */
  private flush(ps: PeerState): void {
    this.touched.add(ps); // what it moves may move the peer's deadlines
    this.charged(ps, () => this.flushNow(ps));
  }

  private flushNow(ps: PeerState): void {
    const now = this.now();
    // One write to the kernel for all the records of this turn's flushes (an OPEN and its
    // first DATA, DATA and ACKs, the records of several connections whose events libuv handed
    // over in one poll), not one per record or per flush: syscalls are most of a new
    // connection's cost. Uncorked in the check phase right after the poll (endOfTurn).
    const s = ps.carrier?.socket;
    if (s) this.corkTurn(ps, s);
    this.moveRecords(ps, now);
    if (ps.carrier?.inputPaused && !ps.session.backlogged) ps.carrier.resumeInput();
    this.scheduleSoon();
  }

  private moveRecords(ps: PeerState, now: number): void {
    for (let guard = 0; guard < 1_000_000; guard++) {
      let moved = false;
      while (ps.carrier?.writable) {
        const rec = ps.session.pollRecord(now);
        if (!rec) break;
        ps.carrier.send(rec);
        moved = true;
      }
      for (let ev = ps.session.pollEvent(); ev; ev = ps.session.pollEvent()) {
        this.onEvent(ps, ev);
        moved = true;
      }
      if (!moved) break;
    }
  }

  private onEvent(ps: PeerState, ev: WrapEvent): void {
    const lc = 'conn' in ev ? ps.conns.get(ev.conn) : undefined;
    switch (ev.type) {
      case 'dial':
        if (ev.datagram) this.dialUdp(ps, ev.conn, ev.target, ev.wrapPort);
        else this.dial(ps, ev.conn, ev.target, ev.wrapPort);
        return;
      case 'deliver': {
        if (!lc) return;
        const session = ps.session;
        if (!lc.datagram) this.counters.observe(lc, lc.local ? 1 : 0, ev.data); // UDP: counted per datagram as sent
        const conn = ev.conn;
        // The same for every delivery of the connection: the io may report several in one call (tcpIo gathers).
        lc.io.write(ev.data, (n) => {
          if (ps.conns.get(conn) !== lc) return;
          // The acknowledgement a delivery causes is the peer's work too (its carrier pauses on the debt).
          // The writes of a turn complete together (one writev): one flush after their
          // callbacks moves whatever ACKs their drained bytes made due, not one per write.
          this.charged(ps, () => session.drained(this.now(), conn, n));
          this.flushAfterTicks(ps);
        });
        return;
      }
      case 'end':
        lc?.io.end();
        return;
      case 'writable':
        lc?.io.resume();
        return;
      case 'held': {
        if (lc) this.counters.outage(lc);
        return;
      }
      case 'opened': {
        // Confirmed: no connect timeout; a refusal remembered for its destination is stale.
        const dst = ps.pending.settle(ev.conn);
        if (dst) this.connects.forget(dst);
        return;
      }
      case 'resumed': {
        const suppressed = admitLine(ps.resumeLog, this.now(), VIOLATION_LOG_MS);
        if (suppressed === undefined) return;
        this.log.info(
          { peer: ps.peer.name, conn: ev.conn, heldMs: Math.round(ev.heldMs), ...suppressedField(suppressed) },
          'wrapped connection resumed',
        );
        return;
      }
      case 'done':
        ps.pending.settle(ev.conn);
        if (lc) {
          this.finish(ps, lc, 'completed');
          if (lc.datagram) lc.io.close(true);
        }
        return;
      case 'close': {
        const reason: ConnEnd = CLOSE_NAMES[ev.code] ?? `code ${ev.code}`;
        this.log.info({ peer: ps.peer.name, conn: ev.conn, reason, detail: ev.reason, byPeer: ev.byPeer }, 'wrapped connection closed');
        const dst = ps.pending.settle(ev.conn);
        if (dst && ev.byPeer && (ev.code === CloseCode.DialFailed || ev.code === CloseCode.Refused)) {
          // A policy refusal looks like a refused port (§16.5.1); a timeout is not repeated.
          const errno = memoErrno(ev.code === CloseCode.Refused ? 'refused' : dialFailureOf(ev.reason));
          if (errno !== undefined) this.connects.remember(dst, errno, REFUSAL_MEMO_MS, this.now());
        }
        if (!lc) return;
        this.finish(ps, lc, reason);
        // Anything but both sides' own FINs is an abnormal end: a reset, never a clean EOF
        // that a reader would take for the whole stream (§16.5).
        lc.io.close(false);
        return;
      }
      case 'pause-all':
        for (const l of ps.conns.values()) l.io.pause();
        return;
      case 'drop-carrier':
        this.log.info({ peer: ps.peer.name, reason: ev.reason, detail: ev.detail }, 'dropping the carrier');
        ps.carrier?.close(ev.detail);
        return;
      case 'peer-restarted':
        this.log.warn({ peer: ps.peer.name }, 'the peer spookd restarted: its wrapped connections are gone');
        return;
      case 'violation': {
        const suppressed = admitLine(ps.violationLog, this.now(), VIOLATION_LOG_MS);
        if (suppressed !== undefined)
          this.log.warn(
            { peer: ps.peer.name, kind: ev.kind, detail: ev.detail, ...suppressedField(suppressed) },
            'wrap protocol violation',
          );
        return;
      }
      default: {
        const _unhandled: never = ev; // every event of the session is acted on
        return _unhandled;
      }
    }
  }

  /**
   * Re-arm at the end of this turn of the event loop: a flush (one per batch of records, per
   * peer) called schedule() itself, and each visits every peer.
   */
  private scheduleSoon(): void {
    if (this.scheduleQueued || this.stopping || this.ticking) return;
    if (this.inTurnEnd) {
      this.scheduleAtTurnEnd = true; // turnEnd re-arms when its flushes are done
      return;
    }
    this.scheduleQueued = true;
    setImmediate(() => {
      this.scheduleQueued = false;
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.stopping || this.ticking) return;
    const now = this.now();
    // A peer removed meanwhile (a dial of its still in flight touched it) is not keyed again.
    for (const ps of this.touched) this.peerTimers.set(ps, this.peers.get(ps.peer.name) === ps ? this.peerDeadline(ps, now) : undefined);
    this.touched.clear();
    const next = Math.min(this.sweepAt, this.peerTimers.peek() ?? Infinity);
    // Called after every flush: re-arm only when the deadline came closer (timers are not
    // free); an armed timer that fires early just ticks and re-arms for the later deadline.
    const at = Math.max(now, Math.ceil(next));
    if (this.timer && this.timerAt <= at) return;
    if (this.timer) clearTimeout(this.timer);
    this.timerAt = at;
    this.timer = setTimeout(() => this.tick(), at - now);
    this.timer.unref();
  }

  /** The earliest moment `ps` needs a tick (undefined: none but the sweep). */
  private peerDeadline(ps: PeerState, now: number): number | undefined {
    let next = Infinity;
    const t = ps.session.pollTimeout();
    // A deadline already past while the carrier is full waits for its drain, not a spinning timer.
    // Without a carrier only the hold and flow-idle timers run, and firing clears them: kept.
    if (t !== undefined && (t > now || !ps.carrier || ps.carrier.writable)) next = Math.min(next, t);
    const connectAt = ps.pending.earliest();
    if (connectAt !== undefined) next = Math.min(next, connectAt);
    const downAt = countsDownAt(ps.downSince);
    if (downAt !== undefined && downAt > now) next = Math.min(next, downAt);
    const dialAt = ps.peer.role !== 0 || (ps.carrier && !this.carrierMoved(ps)) ? undefined : ps.redial.nextAt();
    if (dialAt !== undefined && this.host.peerAddr(ps.peer.name)) next = Math.min(next, Math.max(dialAt, now + 10));
    // A dialled carrier's local address is checked every LOCAL_CHECK_MS (drivers/wrap/roam.ts): a fixed grid, no re-arm per flush.
    if (ps.peer.role === 0 && ps.carrier) next = Math.min(next, Math.max(now, this.localAddrs.nextAt()));
    return next === Infinity ? undefined : next;
  }

  private tick(): void {
    this.timer = undefined;
    const now = this.now();
    // One schedule() for the tick, not one per peer's flush (each used to visit every peer: a hub
    // with 1,000 peers spent 9% of its CPU in that square, bench scale).
    this.ticking = true;
    try {
      this.checkLocalAddresses(now);
      // The due peers; every peer at the sweep.
      let due: Iterable<PeerState>;
      if (now >= this.sweepAt) {
        this.sweepAt = now + SWEEP_MS;
        due = [...this.peers.values()];
      } else {
        const popped: PeerState[] = [];
        for (let ps = this.peerTimers.popDue(now); ps; ps = this.peerTimers.popDue(now)) popped.push(ps);
        due = popped;
      }
      for (const ps of due) {
        const t = ps.session.pollTimeout();
        if (t !== undefined && t <= now) ps.session.handleTimeout(now);
        this.expireConnects(ps, now);
        this.ensureCarrier(ps);
        this.flush(ps);
      }
      this.applyDown();
      this.connects.prune(now);
    } finally {
      this.ticking = false;
      this.schedule(); // re-armed even if a peer's step threw
    }
  }
}

/** Listen; later errors (accept failures: ENFILE, ENOMEM) are logged, never thrown. */
function listen(server: Server, host: string, port: number, log: Logger): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => {
      server.off('error', reject);
      server.on('error', (e) => log.warn({ listen: `${host}:${port}`, error: e.message }, 'listener error'));
      resolve();
    });
  });
}
