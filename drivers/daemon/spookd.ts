/**
 * spookd: drives the sans-I/O cores over a real UDP socket. The peer table (core/etcp/peers.ts)
 * holds the ETCP session policy (handshakes, rekeys, roaming, budgets, violations, QN
 * demultiplexing); above it, one HalfPair per configured peer (all configured registers on it)
 * with a DiskStore, and the QN domains; an admin API on a Unix socket.
 *
 * The loop is the simulator's loop with real inputs: a datagram or a timer arrives, the table
 * and the cores handle it, then their events are executed and datagrams sent, and the one timer
 * is re-armed at the earliest deadline of the table, the pairs and the domains. What stays here:
 * sockets, timers, fencing a pair whose handling throws, storage, admin.
 *
 * Storage (the pair's `Ready`): a pair hands its steps' writes to this driver and releases no
 * datagram and no event until they are durable. The inputs of one pass of the event loop
 * (every datagram libuv read, the admin's writes) only mark their pairs; one commit pass then
 * writes each marked pair's batch to its store with one fsync per file touched (group commit),
 * and only then sends and publishes. A store that fails fences its pair alone.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { isIPv4, isIPv6, SocketAddress } from 'node:net';
import { join } from 'node:path';
import type { Logger } from 'pino';
import { EtcpEndpoint, MAX_SEALED_PAYLOAD, pairIdentity, pairTag, type Session } from '../../core/etcp/endpoint.js';
import { frameAead } from '../crypto/frame-aead.js';
import { randomBytes } from 'node:crypto';
import { TAGLEN, type KeyPair } from '../../crypto/primitives.js';
import { HalfPair } from '../../core/pair/halfpair.js';
import type { SpookEvent } from '../../core/pair/events.js';
import { DiskStore, StoreRefused, mkdirDurable, type FsyncPolicy } from '../store/store.js';
import { INIT_LEASE_FILE, readTimestamp, writeTimestamp } from './init-timestamps.js';
import { claimPairDir, heldByOtherPair } from '../store/pair-dir.js';
import { decodeKey, encodeKey } from './keys.js';
import { ConfigError, parseHostPort, type SpookdConfig } from './config.js';
import { bindFault, describeBindError } from './preflight.js';
import { RERESOLVE_MS, endpointOf, familyOf, lookupBounded, systemLookup, type Lookup, type NamedEndpoint } from './resolve.js';
import { AdminServer } from '../admin/server.js';
import { Metrics, type CommitScope } from '../admin/metrics.js';
import { FastPath } from './fastpath.js';
import { WarnLimiter } from '../../core/util/warn-limiter.js';
import type { SourceBudgets, WorkBudget } from '../../core/etcp/budget.js';
import { DomainHost } from './domains.js';
import { WrapManager, type Interceptor } from '../wrap/manager.js';
import type { WrapperSpec } from '../wrap/local.js';
import type { AllowRule } from '../wrap/policy.js';
import { checkMaxValueBytes, type Quota } from '../../core/register/quota.js';
import type { ReloadReport } from '../../client/protocol.js';
import { reloadFromFile } from './reload.js';
import { hostDefaultHoldMs, hostDefaultConnectTimeoutMs } from '../wrap/hold.js';
import { PeerTable, sourceOf, type Addr, type PeerEvent, type PeerView } from '../../core/etcp/peers.js';
import { HANDSHAKE_RETRY_MS } from '../../core/etcp/constants.js';
import type { DropCounts } from '../../core/etcp/drops.js';
import { LifecycleEvent, PairState } from '../../core/pair/lifecycle.js';
import { describeDiffs } from '../../core/pair/manifest.js';
import { DeadlineHeap } from '../../core/util/deadline-heap.js';

export interface PeerLink {
  readonly name: string;
  readonly publicKey: Uint8Array;
  readonly pair: HalfPair;
  /**
   * The pair's name in the admin API (pairTag: a hash of both keys): a write's Outcome carries it, and
   * `outcome` asked with another one is about a pair this one replaced (a rekey), whose seqs this one reuses.
   */
  readonly pairTag: string;
  readonly store: DiskStore;
  /** The peer table's view of this peer: sessions, address, timers' state, violations. */
  readonly peer: PeerView;
  /** Where frames go: configured, then learned from authenticated frames (roaming). */
  readonly addr: Addr | undefined;
  /** The session frames go out on. */
  readonly session: Session | undefined;
  /** Times its sessions were cut for protocol violations. */
  readonly disconnects: number;
  /** CPU time this peer's datagrams may take (§12.9). */
  readonly budget: WorkBudget;
  /** Set when handling this peer threw unexpectedly: the pair is no longer driven until a restart. */
  readonly fenced: Fence | undefined;
}

/** A batch whose fsyncs ended (`failed`: how), waiting for `releaseSynced`. */
interface EndedSync {
  link: Link;
  writes: number;
  charge: boolean;
  /** Resolves the link's `syncing`. */
  done: () => void;
  failed?: Error;
}

const hostPort = (a: Addr | undefined): string | undefined => a && sourceOf(a);

/** How a stop ended. */
export interface StopReport {
  /** Flushes that failed after writes were acknowledged (fsync everysec: in the background, or a store's last while closing): those writes may be lost. */
  storeFailures: number;
}

/** A configured peer: its pair and store here, its sessions in the peer table. */
class Link implements PeerLink {
  fenced: Fence | undefined = undefined;
  /** Its last batch, syncing off the event loop until released (never rejects): the next batch waits for it. */
  syncing: Promise<void> | undefined;
  /** Reads waiting for what the pair holds to be durable (`Spookd.durableRead`). */
  readers: (() => void)[] = [];
  /** Batches taken from its pair and made durable: a write proposed now is in batch `taken + 1` (`whenBatchDurable`). */
  batchesTaken = 0;
  batchesDurable = 0;
  /** Waiting for a batch to be durable (`Spookd.whenBatchDurable`). */
  batchWaiters: { batch: number; run: () => void }[] = [];
  /** A pass skipped it while it synced (with a charge to its peer): its release pumps it again. */
  redo: 'no' | 'free' | 'charged' = 'no';
  /** Being removed (`removePeer`): its batches are fsynced at once, so none is syncing when its store closes. */
  removing = false;
  /** The address last logged for the peer (roaming is logged once per change). */
  loggedAddr: Addr | undefined;
  readonly pairTag: string;

  constructor(
    readonly name: string,
    readonly publicKey: Uint8Array,
    readonly pair: HalfPair,
    readonly store: DiskStore,
    private readonly table: PeerTable,
    localKey: Uint8Array,
  ) {
    this.pairTag = pairTag(localKey, publicKey);
  }

  get peer(): PeerView {
    return this.table.peer(this.name)!;
  }
  get addr(): Addr | undefined {
    return this.peer.addr;
  }
  get session(): Session | undefined {
    return this.peer.session;
  }
  get disconnects(): number {
    return this.peer.disconnects;
  }
  get budget(): WorkBudget {
    return this.peer.budget;
  }
}

/** Commit rounds stop() runs at once (a pass normally defers after 8 to let the loop breathe). */
const FINAL_COMMIT_ROUNDS = 64;
/**
 * How long a stop waits for background snapshots under way (else the next start replays log.old and
 * writes the snapshot before it serves: ~9 s at 10^7 keys). Well inside main.ts's 10 s bound on a stop.
 */
const SNAPSHOT_SETTLE_MS = 5_000;

/** A reload asked for while spookd starts or stops, or without a configuration file: nothing done. */
export class ReloadRefused extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ReloadRefused';
  }
}

/** A reload asked for while one runs. */
export class ReloadBusy extends Error {
  constructor() {
    super('a reload is under way: retry once it is done');
    this.name = 'ReloadBusy';
  }
}

export interface Fence {
  /** An exception while handling the pair, or its durable store failing (both decohere it with `internal-error`). */
  cause: 'internal-error' | 'store-failed';
  error: string;
  at: number;
}

export class Spookd {
  readonly links = new Map<string, Link>();
  /** Refused-handshake warnings, one per source address per minute. */
  readonly warns = new WarnLimiter();
  /**
   * Warnings keyed by an address a sender picks (a refused handshake, a datagram that failed, a
   * send to where a handshake came from): a limiter of their own, counted into `warns.suppressed`.
   * Sharing `warns`, 1,024 senders filled its keys and every warning about a peer went to the one
   * overflow slot (logged once a minute among them all) for as long as they kept on.
   */
  private readonly sourceWarns = new WarnLimiter();
  /**
   * Each pair's non-routine lifecycle lines, one per transition (peer, from, to) per 10 s: a peer
   * moves its pair as fast as it sends Manifests that differ (DECOHERENT → DECOHERENT, a new
   * register-mismatch) or that match and then do not (DECOHERENT ↔ REENTANGLING), ~40 to a datagram,
   * and each was an info line of ~300 octets. Keys are configured peers × transitions (a dozen).
   */
  private lifecycleLines = new WarnLimiter(10_000, 1 << 16);
  /**
   * Per peer: the state its last lifecycle line moved to, and a line owed at the end of the limit's
   * window when a transition was left out: without it, a pair that failed, recovered and failed
   * again within 10 s was last logged ENTANGLED while it stayed DECOHERENT.
   */
  private readonly lifecycleShown = new Map<string, { to: PairState; owed?: NodeJS.Timeout; left: number }>();
  private readonly etcp: EtcpEndpoint;
  /** The ETCP session policy: every peer's sessions, handshakes, address, budget and violations. */
  readonly table: PeerTable;
  private socket: Socket | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopping = false;
  /** Re-resolution of peers configured by DNS name (watchNames). */
  private nameTimer: NodeJS.Timeout | undefined;
  /** Those peers, by name, and how and how often they are looked up (watchNames). */
  private named = new Map<string, NamedEndpoint>();
  nameLookup: Lookup = systemLookup;
  private nameEveryMs = RERESOLVE_MS;
  /** Set once start() has finished: what /readyz reports (with `stopping`). */
  private started = false;
  /** The admin API (undefined until start). */
  admin: AdminServer | undefined;
  private metrics: Metrics | undefined;
  readonly fastPath: FastPath;
  private readonly startedAt = performance.now();
  readonly subscribers = new Set<(link: PeerLink, ev: SpookEvent) => void>();
  /** QN domains by name; their messages ride the pair sessions. */
  readonly domains = new Map<string, DomainHost>();
  /** Domains with inputs not yet persisted this turn, and whether their flush is queued. */
  private readonly dirtyDomains = new Set<DomainHost>();
  private domainCommitQueued = false;
  /** Wrapped TCP connections: carriers to the peers, interception, per-connection streams. */
  readonly wraps: WrapManager;
  /** Pairs an input touched since the last commit pass: their writes go to disk, then their output leaves. */
  private readonly dirty = new Set<Link>();
  /**
   * Of those, the pairs whose peer's datagrams (or timers) touched them: the commit pass charges
   * their work to the peer's budget (§12.9). Local writes (kick) and start-up are not the peer's doing.
   */
  private readonly charged = new Set<Link>();
  private commitQueued = false;
  private scheduleQueued = false;
  /**
   * Each pair's next deadline (`pollTimeout`), so the timer is armed and a tick finds the due
   * pairs without visiting them all. A pair is re-keyed after anything stepped it (`forPeer`
   * marks it stale; `rekeyTimers` re-keys the stale ones before the heap is read).
   */
  private readonly pairTimers = new DeadlineHeap<Link>();
  private readonly timersStale = new Set<Link>();
  private storesClosed = false;
  /** Builds a peer's store (at start, and for a peer added by a reload). */
  private readonly makeStore: (peer: string, dir: string, fsync: FsyncPolicy, onFlushFailed: (e: Error) => void) => DiskStore;
  /** Batches whose fsyncs ended, released together by `releaseSynced` at the end of the turn. */
  private syncsEnded: EndedSync[] = [];
  private releaseQueued = false;
  /** Commit passes run and the writes they made durable (a measure of group commit). */
  readonly commits = { passes: 0, batches: 0, writes: 0, storeFailures: 0, syncing: 0 };
  /** Background flushes (fsync everysec) that failed: what they covered had been acknowledged (StopReport). */
  private flushesFailed = 0;
  /** Stores of peers a reload removed whose close failed (a flush: acknowledged writes may be lost): the stop reports them. */
  private removedStoresFailed = 0;

  /**
   * The file a reload reads (main.ts sets it; undefined: this daemon has none, `reload` is refused).
   * The running configuration is `cfg`: a reload replaces it with what it applied (reload.ts).
   */
  configPath: string | undefined;
  /** stop() was called: no reload starts from then on. */
  private stopRequested = false;
  /** A reload under way (one at a time: SIGHUP and `spook reload` share it). */
  private reloading: Promise<ReloadReport> | undefined;

  /** Whether a reload runs: what changes the running configuration otherwise (wrap-add, wrap-remove) waits for it to end. */
  get reloadUnderWay(): boolean {
    return this.reloading !== undefined;
  }
  /** Told when a peer is removed (a reload): writes waiting on its pair end with `peer-removed`. */
  readonly removals = new Set<(peer: string) => void>();
  /** Called for a peer added by a reload, its pair loaded from disk and not yet stepped (what it holds is durable). */
  readonly additions = new Set<(link: PeerLink) => void>();

  constructor(
    public cfg: SpookdConfig,
    readonly key: KeyPair,
    readonly log: Logger,
    /** Builds each peer's store (tests inject failing ones); `onFlushFailed` is for its background flush (fsync "everysec"). */
    makeStore: (peer: string, dir: string, fsync: FsyncPolicy, onFlushFailed: (e: Error) => void) => DiskStore = (
      _peer,
      dir,
      fsync,
      onFlushFailed,
    ) => new DiskStore(dir, fsync, undefined, undefined, onFlushFailed),
    /** Replaces the BPF hooks of the wrappers (tests: a stand-in that says where a connection was going). */
    interceptor?: (interceptPort: number) => Interceptor,
  ) {
    const peers = cfg.peers.map((p) => ({ name: p.name, publicKey: decodeKey(p.publicKey, `peer ${p.name}`) }));
    // The last accepted HandshakeInit timestamp per peer survives restarts (replayed inits stay refused); not
    // that of a directory of other keys (a rekey across the restart: addLink sets it aside, its last-init with it).
    const acceptedInits = new Map<string, number>();
    for (const p of peers) {
      if (heldByOtherPair(join(cfg.dataDir, p.name), key.publicKey, p.publicKey)) continue;
      const ts = this.acceptedInit(p.name);
      if (ts !== undefined) acceptedInits.set(p.name, ts);
    }
    // Our own inits' timestamps run on across restarts, whatever the clock did (a clock once ahead, then stepped
    // back): one lease for every peer, as the timestamps are one sequence.
    const leaseFile = join(cfg.dataDir, INIT_LEASE_FILE);
    let initLease: number | undefined;
    try {
      initLease = readTimestamp(leaseFile);
    } catch (e) {
      log.warn(
        { file: leaseFile, error: (e as Error).message },
        'unreadable init timestamp lease, ignored: a peer may refuse our handshakes as replays until our clock passes our last one',
      );
    }
    this.etcp = new EtcpEndpoint({
      staticKey: key,
      initLease,
      onInitLease: (upTo) => {
        try {
          mkdirDurable(cfg.dataDir);
          writeTimestamp(leaseFile, upTo, cfg.dataDir);
          return true;
        } catch (e) {
          const suppressed = this.warns.admit(this.now(), 'init-lease');
          if (suppressed !== undefined)
            log.warn({ file: leaseFile, error: (e as Error).message, suppressed }, 'cannot persist the init timestamp lease');
          return false;
        }
      },
      aead: frameAead(), // libsodium, else libcrypto's EVP (one context per session direction), else node:crypto
      peers,
      random: (n) => new Uint8Array(randomBytes(n)),
      acceptedInits,
      cookieThreshold: cfg.handshakes.cookieThreshold,
      perSourceLimit: cfg.handshakes.perSourceLimit,
      perPeerLimit: cfg.handshakes.perPeerLimit,
      // Sources are `address:port`; a peer's exemption covers its address, seeded with its configured endpoint, and the
      // per-source DH limit counts by address too (one share per host, however many ports it sends from).
      sourceHost: (s) => s.slice(0, s.lastIndexOf(':')),
      knownSources: cfg.peers.flatMap((p) => {
        const a = toAddr(p.endpoint, cfg.listen);
        return a ? [{ peer: p.name, source: sourceOf(a) }] : [];
      }),
      onInitAccepted: (peer, ts) => {
        try {
          // Replaced atomically before the response leaves (a failed write keeps the old value); not fsynced: see writeTimestamp.
          mkdirDurable(join(cfg.dataDir, peer.name));
          writeTimestamp(join(cfg.dataDir, peer.name, 'last-init'), ts, join(cfg.dataDir, peer.name), false);
        } catch (e) {
          log.warn({ peer: peer.name, error: (e as Error).message }, 'cannot persist the handshake timestamp');
        }
      },
    });
    this.table = new PeerTable({
      etcp: this.etcp,
      localPublicKey: key.publicKey,
      peers: cfg.peers.map((p) => ({
        name: p.name,
        publicKey: decodeKey(p.publicKey, `peer ${p.name}`),
        endpoint: toAddr(p.endpoint, cfg.listen),
        pairState: () => this.links.get(p.name)!.pair.state,
        budgetMs: cfg.peerBudgetMs,
      })),
      now: this.startedAt,
      clock: () => this.now(),
      timestamp: () => Date.now(),
      rekeyAfterMs: cfg.timing.rekeyAfterMs,
      sessionGraceMs: cfg.timing.sessionGraceMs,
      violationLimit: cfg.violationLimit,
    });
    this.fastPath = new FastPath(cfg, log);
    this.makeStore = makeStore;
    for (const p of cfg.peers) this.addLink(p);
    for (const dc of cfg.domains) {
      const dom = new DomainHost(dc, key, peers, cfg.dataDir, cfg.fsync, log, this.now());
      dom.batchTurns(() => this.domainDirty(dom));
      dom.onLineSuppressed = () => void this.warns.suppressed++;
      this.domains.set(dc.name, dom);
    }
    const listen = parseHostPort(cfg.listen)!;
    const intercept = parseHostPort(cfg.wrap.intercept, true)!;
    // A wrapper without a hold holds as long as this host's TCP would (never worse than direct).
    const defaultHoldMs = (this.defaultHoldMs = hostDefaultHoldMs());
    // A wrapper without a connect timeout waits for the far side's dial as long as this host's connect() would.
    const defaultConnectTimeoutMs = (this.defaultConnectTimeoutMs = hostDefaultConnectTimeoutMs());
    this.wraps = new WrapManager(
      {
        key,
        peers: [...this.links.values()].map((l) => ({
          name: l.name,
          publicKey: l.publicKey,
          role: l.pair.role === 'sequencer' ? 0 : 1,
          descriptors: storeDescriptors(l.pair),
        })),
        peerAddr: (name) => this.links.get(name)?.addr,
        listen,
        // A peer's carrier work draws on the same budget as its datagrams (§12.9).
        budget: (name) => {
          const b = this.links.get(name)?.budget;
          return b && { charge: (ms) => (b.charge(ms), b.waitMs(this.now())) };
        },
      },
      {
        ...cfg.wrap,
        intercept,
        defaultHoldMs,
        defaultConnectTimeoutMs,
        allow: this.allowRules(cfg.wrap.allow),
      },
      cfg.wrap.wrappers.map((w) => this.wrapperSpec(w)),
      log.child({ component: 'wrap' }),
      interceptor,
    );
  }

  private readonly defaultHoldMs: number;
  private readonly defaultConnectTimeoutMs: number;

  /** A configured wrapper as the manager takes it: its peer by name, the host's defaults for what it leaves out. */
  wrapperSpec(w: SpookdConfig['wrap']['wrappers'][number]): WrapperSpec {
    return {
      protocol: w.protocol,
      port: w.port,
      peer: this.peerName(w.peer),
      holdMs: w.hold ?? this.defaultHoldMs,
      delta: w.delta,
      whenDown: w.whenDown,
      connectTimeoutMs: w.connectTimeout ?? this.defaultConnectTimeoutMs,
    };
  }

  /** Configured wrap.allow rules as the dial policy takes them: peers by name. */
  allowRules(rules: SpookdConfig['wrap']['allow']): AllowRule[] {
    return rules.map((r) => ({ ...r, peer: r.peer === '*' ? '*' : this.peerName(r.peer) }));
  }

  /**
   * Read the configuration file again and apply it (SIGHUP, `spook reload`; reload.ts). One at a
   * time: while one runs, another is refused (ReloadBusy) rather than queued.
   */
  async reload(): Promise<ReloadReport> {
    if (this.configPath === undefined) throw new ReloadRefused('spookd was started without a configuration file: nothing to reload');
    // Not before start() finished nor once stop() began: what a reload adds would outlive the stop.
    if (!this.started || this.stopping || this.stopRequested) throw new ReloadRefused('spookd is starting or stopping: not reloaded');
    if (this.reloading) throw new ReloadBusy();
    this.reloading = reloadFromFile(this, this.configPath);
    try {
      return await this.reloading;
    } finally {
      this.reloading = undefined;
    }
  }

  /**
   * A pair register's quota changed (a reload): every pair decides by it from its next collapse,
   * keeping what it holds, and sends its new manifest (§6.3) to its peer.
   */
  setRegisterQuota(register: string, quota: Quota): void {
    if (!this.cfg.registers.some((r) => r.name === register)) throw new Error(`no register named ${register}`);
    // Checked here, once: a quota a pair refuses (setQuota throws) would fence every pair (forPeer), not refuse the change.
    checkMaxValueBytes(register, quota);
    for (const link of this.links.values()) {
      if (link.fenced) continue;
      this.forPeer(link, 'reload', () => link.pair.setQuota(this.now(), register, quota), false);
      this.pump(link, false);
    }
    this.drain(this.now());
    this.schedule();
  }

  /** A peer named by its name or its public key. */
  peerName(nameOrKey: string): string {
    if (this.links.has(nameOrKey)) return nameOrKey;
    for (const l of this.links.values()) if (encodeKey(l.publicKey) === nameOrKey) return l.name;
    throw new Error(`no peer named or keyed ${JSON.stringify(nameOrKey)} (configured: ${[...this.links.keys()].join(', ')})`);
  }

  now(): number {
    return performance.now();
  }

  /** Datagrams dropped by the daemon (wire checks, ETCP, the peer table), by reason; the pairs count their own. */
  get drops(): Readonly<DropCounts> {
    return this.table.drops;
  }

  /** Data frames that fail to open are charged here, by source address, not to the peer (§12.9). */
  get failing(): SourceBudgets {
    return this.table.failing;
  }

  get uptimeMs(): number {
    return this.now() - this.startedAt;
  }

  async start(): Promise<void> {
    const listen = parseHostPort(this.cfg.listen)!;
    const sock = createSocket({
      type: isIPv6(listen.host) ? 'udp6' : 'udp4',
      reuseAddr: false,
      recvBufferSize: this.cfg.udpReceiveBufferBytes,
    });
    sock.on('message', (msg, rinfo) => this.onDatagramSafe(new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength), rinfo));
    sock.on('error', (e) => this.log.error({ err: e }, 'UDP socket error'));
    await new Promise<void>((resolve, reject) => {
      // A bind failure names the field (the socket's later errors go to the log, above).
      const failed = (e: NodeJS.ErrnoException): void =>
        reject(new ConfigError(`listen: ${this.cfg.listen} (UDP): ${describeBindError(e.code ?? e.message)}`));
      sock.once('error', failed);
      sock.bind(listen.port, listen.host, () => {
        sock.off('error', failed);
        resolve();
      });
    });
    // A burst (a leader's window of appends, a commit pass's datagrams) must not overflow the
    // default receive buffer (~200 KB, about 90 datagrams) while this process fsyncs: each loss
    // costs a retransmission round. The kernel caps the size at net.core.rmem_max.
    try {
      sock.setRecvBufferSize(RECV_BUFFER_BYTES);
    } catch (e) {
      this.log.warn({ err: e }, 'cannot enlarge the UDP receive buffer');
    }
    this.socket = sock;
    // Linux reports twice what it grants (its bookkeeping); less than asked: net.core.rmem_max capped it.
    const granted = sock.getRecvBufferSize() / 2;
    if (granted < this.cfg.udpReceiveBufferBytes)
      this.log.warn(
        { asked: this.cfg.udpReceiveBufferBytes, granted },
        'UDP receive buffer smaller than udpReceiveBufferBytes (raise net.core.rmem_max): bursts from many peers may be lost',
      );
    this.log.info({ listen: this.cfg.listen, publicKey: encodeKey(this.key.publicKey) }, 'listening');
    this.fastPath.start(listen.port);
    this.admin = new AdminServer(this, this.cfg.adminSocket, this.log);
    await this.admin.start();
    if (this.cfg.metrics) {
      this.metrics = new Metrics(this, this.cfg.metrics.listen, this.log);
      await this.metrics.start();
    }
    try {
      await this.wraps.start();
    } catch (e) {
      throw bindFault(e, [
        [this.cfg.listen, "listen (TCP, the wrappers' carrier)"],
        [this.cfg.wrap.intercept, 'wrap.intercept'],
      ]);
    }
    for (const link of this.links.values()) this.pump(link, false);
    this.schedule();
    this.started = true;
  }

  /** The last HandshakeInit timestamp accepted from `peer` before (§12.2.1): its `last-init`. */
  private acceptedInit(peer: string): number | undefined {
    const file = join(this.cfg.dataDir, peer, 'last-init');
    try {
      return readTimestamp(file);
    } catch (e) {
      // Damaged (an empty file an older release's in-place write left, or garbage): every init accepted
      // before was accepted before now, and an honest peer's clock is about ours, so refuse those up to
      // now (§12.2.1) rather than none.
      const floor = Date.now();
      this.log.warn(
        { peer, file, error: (e as Error).message, refusedUpTo: floor },
        "unreadable handshake timestamp: the peer's inits up to this host's clock are refused as replays",
      );
      return floor;
    }
  }

  /** A peer's pair: its HalfPair, its store (loaded), its link (at start, and for a peer added by a reload). */
  private addLink(p: SpookdConfig['peers'][number]): Link {
    const publicKey = decodeKey(p.publicKey, `peer ${p.name}`);
    const ids = pairIdentity(this.key.publicKey, publicKey);
    const dir = join(this.cfg.dataDir, p.name);
    // A store of the same name for other keys (a rekey) is another pair's: set aside, never replayed under these keys.
    const retired = claimPairDir(dir, this.key.publicKey, publicKey);
    if (retired !== undefined)
      this.log.warn({ peer: p.name, kept: retired }, 'peer or host key changed: a new pair, from an empty store (the old one kept aside)');
    const store = this.makeStore(p.name, dir, this.cfg.fsync, (e) => this.onFlushFailed(p.name, e));
    // Nothing is lost (the logs still hold it) and the next snapshot is written at once: say so, carry on.
    store.onSnapshotFailed = (e) =>
      this.log.warn({ peer: p.name, err: e.message }, 'background snapshot failed; the next one is written at once');
    const pair = new HalfPair(
      {
        pairId: 0,
        localId: ids.localId,
        peerId: ids.peerId,
        seed: ids.seed,
        registers: this.cfg.registers.map((r) => ({
          name: r.name,
          kind: r.kind,
          policy: r.policy,
          maxPending: r.maxPending,
          log: { maxRecords: r.logRecords, maxBytes: 256 * 1024 * 1024 },
          quota: { maxKeys: r.maxKeys, maxBytes: r.maxBytes, maxValueBytes: r.maxValueBytes },
        })),
        timing: { keepaliveMs: this.cfg.timing.keepaliveMs, silenceMs: this.cfg.timing.silenceMs },
        maxPayload: MAX_SEALED_PAYLOAD,
        writes: 'driver',
        sealer: {
          seal: (payload) => this.table.seal(p.name, payload),
          sealInPlace: (frame) => this.table.sealInPlace(p.name, frame),
          tailroom: TAGLEN,
        },
      },
      this.now(),
    );
    const link = new Link(p.name, publicKey, pair, store, this.table, this.key.publicKey);
    try {
      for (const r of link.pair.registers.values()) {
        const rep = store.load(r);
        this.log.info({ peer: p.name, ...rep }, rep.tornBytes > 0 ? 'register loaded; torn log tail cut' : 'register loaded');
      }
    } catch (e) {
      closeQuietly(store);
      throw e;
    }
    this.log.info({ peer: p.name, role: link.pair.role }, 'pair configured');
    this.links.set(p.name, link);
    this.timersStale.add(link);
    return link;
  }

  /**
   * A peer added while running (a reload, as `wg syncconf`): authorised in ETCP, its pair and
   * store created (a peer removed earlier resumes from its state on disk), its first handshake
   * due as at start. The other pairs are not touched.
   */
  addPeer(p: SpookdConfig['peers'][number]): void {
    if (this.links.has(p.name)) throw new Error(`peer ${p.name} is already configured`);
    const publicKey = decodeKey(p.publicKey, `peer ${p.name}`);
    for (const l of this.links.values())
      if (Buffer.from(l.publicKey).equals(Buffer.from(publicKey))) throw new Error(`peer ${p.name}: its key is peer ${l.name}'s`);
    // Its store first (what a bad disk refuses), its key authorised last: a refused peer is trusted nowhere.
    const link = this.addLink(p);
    const endpoint = toAddr(p.endpoint, this.cfg.listen);
    try {
      this.table.addPeer({
        name: p.name,
        publicKey,
        endpoint,
        pairState: () => this.links.get(p.name)!.pair.state,
        budgetMs: this.cfg.peerBudgetMs,
      });
      // After the table: the wrappers' carrier budget is the peer's, read from it.
      this.wraps.addPeer({
        name: p.name,
        publicKey,
        role: link.pair.role === 'sequencer' ? 0 : 1,
        descriptors: storeDescriptors(link.pair),
      });
      // After the link: a rekeyed peer's directory (and the old key's last-init) went aside.
      // Its configured endpoint exempt from the global DH bucket, as at a start (knownSources).
      this.etcp.addPeer({ name: p.name, publicKey }, this.acceptedInit(p.name), endpoint && sourceOf(endpoint));
    } catch (e) {
      this.wraps.removePeer(p.name);
      this.table.removePeer(p.name);
      this.links.delete(p.name);
      this.timersStale.delete(link);
      closeQuietly(link.store);
      throw e;
    }
    for (const f of this.additions) f(link);
    this.log.info({ peer: p.name, endpoint: p.endpoint ?? null }, 'peer added');
    this.schedule();
  }

  /**
   * A peer removed while running: told we are going away, its sessions ended (and out of the
   * XDP pair table), its key no longer authorised, its store closed with its state kept on disk.
   * Refused while a domain or a wrapper names it (remove those first).
   */
  async removePeer(name: string): Promise<void> {
    const link = this.links.get(name);
    if (!link) throw new Error(`no peer named ${name}`);
    this.refuseMember(name);
    for (const w of this.wraps.wrappers.values())
      if (w.peer === name) throw new Error(`peer ${name} carries the wrapper of port ${w.port}: remove the wrapper first`);
    // What its pair (and every other) wrote so far reaches the disk first: nothing accepted is dropped with it.
    // From here its batches are fsynced at once; the one syncing ends first.
    link.removing = true;
    await this.syncsSettled(() => [link]);
    // A `member add` of it while its fsyncs settled: refused after all (a voter's key is not revoked).
    try {
      this.refuseMember(name);
    } catch (e) {
      link.removing = false;
      throw e;
    }
    this.commit(true);
    const bye = this.table.canSend(name) ? link.pair.goingAway(this.now()) : undefined;
    const sock = this.socket;
    if (bye && link.addr && sock)
      await new Promise<void>((resolve) => sock.send(bye, link.addr!.port, link.addr!.address, () => resolve()));
    // Again: what was written while the goodbye went out (the sequencer decides its own writes alone).
    this.commit(true);
    // A domain link that is no member (every configured peer is one): nothing of it is heard there from now.
    for (const d of this.domains.values()) d.dropPeer(name);
    this.wraps.removePeer(name); // its carrier and wrapped connections; its key refused there too
    this.table.removePeer(name);
    this.etcp.removePeer(link.publicKey); // its key refused before anything else can throw
    this.drain(this.now()); // its session-removed events: out of the XDP pair table
    this.links.delete(name);
    this.serveReaders(link); // what the commits above made durable
    this.pairTimers.set(link, undefined);
    this.timersStale.delete(link);
    this.dirty.delete(link);
    this.charged.delete(link);
    // Its lifecycle lines' state: kept, a re-added peer of that name was logged from the old pair's state.
    clearTimeout(this.lifecycleShown.get(name)?.owed);
    this.lifecycleShown.delete(name);
    // Writes still undecided (a follower's, the sequencer having not answered; a sequencer's own
    // while the ends' registers differ) are abandoned: their waiters get `peer-removed`, and they
    // are not proposed again should the peer come back.
    const undecided = [...link.pair.registers.values()].reduce((n, r) => n + r.pendingCount, 0);
    for (const f of this.removals) f(name);
    for (const w of link.batchWaiters.splice(0)) w.run(); // after: their writes are answered peer-removed
    try {
      link.store.close({ abandonPending: true });
    } catch (e) {
      // Counted as a stop's close failure is (the link goes, so the stop would not see it, and reported a clean end).
      this.removedStoresFailed++;
      if (link.fenced?.cause !== 'store-failed') this.commits.storeFailures++;
      this.log.error({ peer: name, err: e }, 'store of a removed peer did not close cleanly: acknowledged writes may be lost');
    }
    if (undecided > 0)
      this.log.warn({ peer: name, undecided }, `peer ${name} removed with ${undecided} write(s) undecided: abandoned (peer-removed)`);
    this.log.info({ peer: name }, 'peer removed');
    this.schedule();
  }

  /** Throws if peer `name` is a voter of a domain here: its key may not be revoked while it is. */
  private refuseMember(name: string): void {
    for (const d of this.domains.values())
      if (d.hasMember(name)) throw new Error(`peer ${name} is a member of domain ${d.cfg.name}: change the domain first`);
  }

  /** A peer's configured endpoint changed (a reload): the next handshake to it goes there. */
  moveEndpoint(name: string, endpoint: string | undefined): void {
    const to = toAddr(endpoint, this.cfg.listen);
    this.table.setAddress(name, to);
    // Exempt there from the global DH bucket, as a start with this endpoint would make it (knownSources).
    if (to) this.etcp.expectPeerAt(name, sourceOf(to));
    this.wraps.addressChanged(name);
    this.schedule();
  }

  /** Started and not stopping (GET /readyz). */
  get ready(): boolean {
    return this.started && !this.stopping;
  }

  /** A write through the admin API decided after `seconds` (the commit-latency histogram, when metrics are on). */
  observeCommit(scope: CommitScope, verdict: 'committed' | 'rejected', seconds: number): void {
    this.metrics?.observeCommit(scope, verdict, seconds);
  }

  /**
   * Peers configured by DNS name (resolved before the start: drivers/daemon/resolve.ts): every
   * `everyMs`, those without a session are looked up again, and a new address replaces the old.
   * `lookup` is also what a reload resolves names with (nameLookup).
   */
  watchNames(named: ReadonlyMap<string, NamedEndpoint>, lookup: Lookup = systemLookup, everyMs = RERESOLVE_MS): void {
    this.nameLookup = lookup;
    this.nameEveryMs = everyMs;
    this.setNamed(named);
  }

  /** The peers configured by DNS name now (at the start, then after each reload): looked up again while they do not answer. */
  setNamed(named: ReadonlyMap<string, NamedEndpoint>): void {
    this.named = new Map(named);
    if (this.named.size === 0 || this.nameTimer !== undefined || this.stopping) return;
    const everyMs = this.nameEveryMs;
    let busy = false;
    const pass = async (): Promise<void> => {
      if (busy || this.stopping) return;
      busy = true;
      try {
        for (const [peer, e] of this.named) {
          const view = this.table.peer(peer);
          if (!view || view.session) continue; // answering: where it is now is known from its packets
          let address: string;
          try {
            address = await lookupBounded(this.nameLookup, e.host, familyOf(this.cfg.listen));
          } catch (err) {
            const suppressed = this.warns.admit(this.now(), `resolve:${peer}`);
            const why = (err as NodeJS.ErrnoException).code ?? (err as Error).message;
            if (suppressed !== undefined)
              this.log.warn(
                { peer, host: e.host, error: why, suppressed },
                `cannot resolve ${e.host} (peer ${peer}): ${why}; retrying every ${everyMs / 1000} s`,
              );
            continue;
          }
          if (this.stopping) return;
          // A reload while the lookup ran (its `named` is a new map) may have moved, renamed or rekeyed
          // the peer: this answer is for what was configured before, and would undo what the reload set.
          if (this.named.get(peer) !== e || this.table.peer(peer) !== view) continue;
          const was = view.addr;
          if (was?.address === address && was.port === e.port) continue;
          this.table.setAddress(peer, { address, port: e.port });
          // Exempt there from the global DH bucket, as a configured endpoint is (moveEndpoint).
          this.etcp.expectPeerAt(peer, sourceOf({ address, port: e.port }));
          this.wraps.addressChanged(peer);
          this.log.info(
            { peer, host: e.host, from: was ? hostPort(was) : null, to: endpointOf(address, e.port) },
            'peer endpoint re-resolved',
          );
          this.schedule();
        }
      } finally {
        busy = false;
      }
    };
    this.nameTimer = setInterval(() => void pass(), everyMs);
    this.nameTimer.unref();
  }

  /**
   * Stop in an order that loses nothing: no more input (datagrams, timers, admin), then tell
   * the peers we are going away, close the socket, and only then close the stores.
   */
  async stop(opts: { handover?: boolean } = {}): Promise<StopReport> {
    // A reload under way finishes first (it may be adding a peer or a wrapper), and none starts after.
    this.stopRequested = true;
    // Only then an await: without a reload, the final commit pass below runs within the stop() call itself.
    if (this.reloading) await this.reloading.catch(() => {});
    // Batches syncing off the event loop end first (their answers leave), and no pass starts one
    // from here (stopRequested); none syncing: no await.
    if (this.commits.syncing > 0) await this.syncsSettled();
    // What the last inputs wrote reaches the disk (and their answers leave), all of it now: from
    // here on a commit pass is a no-op (none may run after the socket or the stores close).
    this.commit(true);
    this.stopping = true;
    if (this.timer) clearTimeout(this.timer);
    if (this.nameTimer) clearInterval(this.nameTimer);
    for (const s of this.lifecycleShown.values()) clearTimeout(s.owed);
    await this.admin?.stop();
    await this.metrics?.stop();
    await this.wraps.stop(opts); // interception ends before anything else: new connections go direct
    for (const link of this.links.values()) {
      // Not a teardown: the pair's state is on disk and the peer should expect us back.
      const bye = this.table.canSend(link.name) ? link.pair.goingAway(this.now()) : undefined;
      const sock = this.socket;
      if (bye && link.addr && sock)
        await new Promise<void>((resolve) => sock.send(bye, link.addr!.port, link.addr!.address, () => resolve()));
    }
    const sock = this.socket;
    this.socket = undefined; // anything still queued to send is dropped, never sent on a closed socket
    await new Promise<void>((resolve) => (sock ? sock.close(() => resolve()) : resolve()));
    this.fastPath.stop();
    // Nothing writes any more: a background snapshot under way may finish (bounded), so the next
    // start need not replay its log.old and write the snapshot again before it serves.
    await Promise.all([...this.links.values()].map((l) => l.store.settle(SNAPSHOT_SETTLE_MS)));
    this.storesClosed = true;
    // Every store is closed even if one's last flush fails (that one is reported, and the stop is not clean).
    let storeFailures = this.flushesFailed + this.removedStoresFailed;
    for (const link of this.links.values())
      try {
        link.store.close();
      } catch (e) {
        storeFailures++;
        // A store whose failed flush fenced its pair throws here too (store.ts, flushLost): counted once.
        if (link.fenced?.cause !== 'store-failed') this.commits.storeFailures++;
        this.log.error(
          { peer: link.name, err: e },
          'durable storage failed while closing: the last second of writes (fsync everysec) may be lost',
        );
      }
    for (const dom of this.domains.values())
      try {
        if (dom.disk?.flushFailed) storeFailures++; // its close does not throw for it (before: a clean stop, exit 0)
        dom.close();
      } catch (e) {
        storeFailures++;
        this.log.error(
          { domain: dom.cfg.name, err: e },
          'durable storage failed while closing: the last second of writes (fsync everysec) may be lost',
        );
      }
    this.log.info({ storeFailures }, storeFailures > 0 ? 'stopped; acknowledged writes may be lost (durable storage failed)' : 'stopped');
    return { storeFailures };
  }

  /**
   * A pair store's background flush (fsync "everysec") failed: what it had acknowledged in the
   * last second may be lost. Fence that pair, as a failed write does; the process carries on.
   */
  private onFlushFailed(peer: string, e: Error): void {
    const link = this.links.get(peer);
    if (!link || this.storesClosed) return;
    this.flushesFailed++;
    this.fence(link, 'store', e, 'store-failed');
    if (!this.stopping) {
      this.drain(this.now()); // its sessions close
      this.schedule();
    }
  }

  /** The socket's handler: nothing a datagram does may end the process (§12.9). */
  private onDatagramSafe(buf: Uint8Array, rinfo: RemoteInfo): void {
    try {
      this.onDatagram(buf, rinfo);
    } catch (e) {
      // Not attributable to a peer (the per-peer handlers fence their own): count, warn rate-limited.
      this.table.count('internal-error', { from: { address: rinfo.address, port: rinfo.port } });
      const suppressed = this.admitSource(this.now(), `internal:${rinfo.address}`);
      if (suppressed !== undefined)
        this.log.error({ err: e, from: sourceOf(rinfo), suppressed }, 'internal error handling a datagram; dropped');
    }
  }

  /**
   * Run `fn` for one peer: time it against the peer's budget, and fence the peer (never the
   * process) if it throws.
   */
  private forPeer(peer: PeerLink, what: string, fn: () => void, charge = true): void {
    const link = this.links.get(peer.name)!;
    if (link.fenced) return;
    const t0 = performance.now();
    try {
      fn();
    } catch (e) {
      this.fence(link, what, e);
    } finally {
      if (charge) link.budget.charge(performance.now() - t0);
      this.timersStale.add(link); // whatever fn did may have moved the pair's deadlines (and its state)
    }
  }

  /**
   * Stop driving a pair whose handling threw, or whose store failed: nothing of its steps
   * that is not durable leaves, its sessions close, other peers carry on.
   */
  private fence(link: Link, what: string, e: unknown, cause: Fence['cause'] = 'internal-error'): void {
    if (link.fenced) return;
    const error = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    link.fenced = { cause, error, at: this.now() };
    this.timersStale.add(link); // a fenced pair has no timers
    // A failed store is no datagram dropped: it is counted in `commits.storeFailures` (and the fence) only.
    if (cause === 'internal-error') this.table.count('internal-error', { peer: link.name });
    if (cause === 'store-failed') {
      this.commits.storeFailures++;
      this.log.error(
        { peer: link.name, err: e },
        e instanceof StoreRefused
          ? 'a batch would snapshot a register ahead of its last record (a bug since PROTOCOL rev 1.25): batch refused, disk unchanged, pair fenced (decoherent, cause internal-error) until spookd restarts; nothing of the batch was sent or acknowledged; other peers carry on'
          : 'durable storage failed: pair fenced (decoherent, cause internal-error) until spookd restarts; nothing it had not made durable was sent or acknowledged; other peers carry on',
      );
    } else
      this.log.error(
        { peer: link.name, while: what, err: e },
        'internal error: pair fenced (decoherent, cause internal-error) until spookd restarts; other peers carry on',
      );
    this.dirty.delete(link);
    this.charged.delete(link);
    this.serveReaders(link); // they are refused now (pair-fenced), not left waiting
    for (const w of link.batchWaiters.splice(0)) w.run();
    try {
      // Watchers see the pair decohere; the pair's own state may be what broke, so this may throw too.
      if (cause === 'store-failed') link.pair.writesFailed(this.now(), error);
      else link.pair.fence(this.now(), `${what}: ${error}`);
      this.publish(link);
    } catch (e2) {
      this.log.error({ peer: link.name, err: e2 }, 'fenced pair could not record its lifecycle');
    }
    this.table.fence(link.name); // its sessions close; no new one forms until a restart
  }

  private onDatagram(buf: Uint8Array, rinfo: RemoteInfo): void {
    if (this.stopping) return;
    const now = this.now();
    this.table.handleDatagram(now, { address: rinfo.address, port: rinfo.port }, buf);
    // Re-arm only when something happened beyond drops: a flood of junk costs no timer churn.
    if (this.drain(now)) this.scheduleSoon();
  }

  /**
   * Execute the table's outputs: sessions added to or removed from the fast path first (the
   * XDP pair slot exists before the HandshakeResp leaves, so the initiator's first Data frame is
   * not dropped as an unknown pair), then its datagrams (a HandshakeResp before any frame on the
   * session it forms), then its other events, then what they made it send. True if a session or
   * a payload came of it (only then can a deadline have moved).
   */
  private drain(now: number): boolean {
    let acted = false;
    const touched = new Set<Link>();
    const isSlot = (ev: PeerEvent): boolean => ev.type === 'session-added' || ev.type === 'session-removed';
    // Handling an event can queue more (a fence closes sessions): those go round again.
    for (let events = this.pollEvents(); ; events = this.pollEvents()) {
      for (const ev of events.filter(isSlot)) this.onTableEvent(now, ev, touched);
      this.flushTable();
      if (events.length === 0) break;
      for (const ev of events) {
        // A domain's datagram re-arms through its domain's flush at the end of the turn (group commit).
        if (ev.type !== 'drop' && ev.type !== 'handshake-refused' && ev.type !== 'cookie-stored' && ev.type !== 'domain-payload')
          acted = true;
        if (!isSlot(ev)) this.onTableEvent(now, ev, touched);
      }
    }
    // Sessions changed: send what the pairs have on them (or collapse without one).
    for (const link of touched) this.forPeer(link, 'handshake', () => this.pump(link));
    this.flushTable();
    return acted;
  }

  private pollEvents(): PeerEvent[] {
    const events: PeerEvent[] = [];
    for (let ev = this.table.pollEvent(); ev; ev = this.table.pollEvent()) events.push(ev);
    return events;
  }

  private flushTable(): void {
    for (let t = this.table.pollTransmit(); t; t = this.table.pollTransmit()) this.sendDatagram(t.datagram, t.to);
  }

  /**
   * One datagram out. Node checks the address before queueing and throws at once (a port of 0,
   * an address of the wrong family): that is one lost datagram, which the protocols resend,
   * never a fault of the pair being served (before, such a throw fenced it as internal-error).
   */
  private sendDatagram(d: Uint8Array, to: { address: string; port: number }): void {
    try {
      this.socket?.send(d, to.port, to.address);
    } catch (e) {
      const suppressed = this.admitSource(this.now(), `send:${to.address}`);
      if (suppressed !== undefined) this.log.warn({ err: e, to: sourceOf(to), suppressed }, 'UDP send refused; datagram dropped');
    }
  }

  /** `sourceWarns.admit`, what it suppresses counted with the rest (`warningsSuppressed`). */
  private admitSource(now: number, key: string): number | undefined {
    const suppressed = this.sourceWarns.admit(now, key);
    if (suppressed === undefined) this.warns.suppressed++;
    return suppressed;
  }

  private onTableEvent(now: number, ev: PeerEvent, touched: Set<Link>): void {
    switch (ev.type) {
      case 'drop':
        this.log.debug({ reason: ev.reason, peer: ev.peer, from: ev.from && sourceOf(ev.from), detail: ev.detail }, 'frame dropped');
        return;
      case 'handshake-refused': {
        // One warning per source address per minute; the rest are counted (drops, warnings-suppressed).
        const suppressed = this.admitSource(now, ev.from.address);
        if (suppressed !== undefined)
          this.log.warn(
            { from: sourceOf(ev.from), detail: ev.detail, suppressed },
            `handshake refused from ${sourceOf(ev.from)}: ${ev.detail} (add its key to peers, or fix the key that host has)`,
          );
        return;
      }
      case 'handshake-unanswered': {
        // Once per peer per interval: an endpoint down for hours must not fill the log.
        const suppressed = this.warns.admit(now, `unanswered:${ev.peer}`);
        if (suppressed !== undefined)
          this.log.warn(
            { peer: ev.peer, endpoint: sourceOf(ev.to), attempts: ev.attempts, suppressed },
            `peer ${ev.peer} at ${sourceOf(ev.to)} has not answered ${ev.attempts} handshakes: is its spookd running and reachable, and does its configuration list this host's public key ${encodeKey(this.key.publicKey)}?`,
          );
        return;
      }
      case 'cookie-stored':
        this.log.debug({ peer: ev.peer, from: sourceOf(ev.from) }, 'cookie received: the next HandshakeInit carries mac2');
        return;
      case 'session-added':
        this.fastPath.addPair(ev.localIndex);
        touched.add(this.links.get(ev.peer)!);
        return;
      case 'session-removed':
        this.fastPath.removePair(ev.localIndex);
        return;
      case 'violation-limit':
        this.log.warn(
          { peer: ev.peer, violations: ev.violations },
          'peer over the protocol-violation limit: session dropped, a new handshake is required',
        );
        return;
      case 'established': {
        const link = this.links.get(ev.peer)!;
        const s = ev.session;
        touched.add(link);
        this.peerHeard(link);
        this.forPeer(link, 'handshake', () => {
          link.pair.resetPacketSpace();
          for (const r of link.pair.registers.values()) r.markStatusDirty();
          this.log.info(
            { peer: link.name, localIndex: s.localIndex, remoteIndex: s.remoteIndex, initiator: s.initiator },
            'pair session established',
          );
        });
        return;
      }
      case 'pair-payload': {
        const link = this.links.get(ev.peer)!;
        this.peerHeard(link);
        this.forPeer(link, 'data frame', () => {
          link.pair.handlePayload(now, ev.packetNumber, ev.payload, ev.wireBytes);
          this.table.handlePairDrops(now, link.name, link.pair.stats.drops);
          this.pump(link);
        });
        return;
      }
      case 'domain-payload': {
        const link = this.links.get(ev.peer)!;
        this.peerHeard(link); // roaming learnt from domain frames too
        this.forPeer(link, 'data frame', () => this.onDomainPayload(now, link, ev.domainId, ev.payload));
        return;
      }
    }
  }

  /**
   * An authenticated packet from the peer: log a change of its address (roaming), and let the
   * wrappers dial a carrier that is down, or left at the old address, at once (§16.2, *Redial*).
   */
  private peerHeard(link: Link): void {
    // Called for every authenticated datagram: compared field by field, no string built per packet.
    const at = link.addr;
    const was = link.loggedAddr;
    if (at?.address !== was?.address || at?.port !== was?.port) {
      // Rate-limited per peer: a peer whose packets come from ever new addresses must not flood the log.
      const suppressed = was === undefined ? undefined : this.warns.admit(this.now(), `roam:${link.name}`);
      if (suppressed !== undefined)
        this.log.info({ peer: link.name, from: hostPort(was), to: hostPort(at), suppressed }, 'peer address changed');
      link.loggedAddr = at && { address: at.address, port: at.port };
    }
    this.wraps.peerHeard(link.name);
  }

  private onDomainPayload(now: number, link: PeerLink, domainId: number, payload: Uint8Array): void {
    const dom = [...this.domains.values()].find((d) => d.id === domainId);
    const from = dom?.idOf.get(link.name);
    if (!dom || from === undefined) {
      this.table.count('unknown-domain', { peer: link.name });
      return;
    }
    if (dom.node.fencedCause) {
      this.table.count('domain-fenced', { peer: link.name, detail: dom.cfg.name });
      return;
    }
    // DomainHost guards the node: an exception fences that domain (§12.9), never this pair or the process.
    dom.handleDatagram(now, from, payload);
    this.pumpDomain(dom);
  }

  /**
   * A domain had an input: its Ready is persisted (one fsync) at the end of this turn of the
   * event loop with every other input of the turn, then its messages go (group commit).
   */
  private domainDirty(dom: DomainHost): void {
    this.dirtyDomains.add(dom);
    if (this.domainCommitQueued) return;
    this.domainCommitQueued = true;
    setImmediate(() => {
      this.domainCommitQueued = false;
      if (this.storesClosed || this.stopping) return;
      const doms = [...this.dirtyDomains];
      this.dirtyDomains.clear();
      for (const d of doms) {
        // Charged to no peer (SECURITY.md, known limits): charged to the peers whose datagrams
        // brought entries, an honest leader's appends went over budget at its followers under load
        // (bench domain: 0.92x etcd against 1.65-1.76x without the charge).
        d.flush();
        this.pumpDomain(d);
      }
      this.drain(this.now());
      this.schedule();
    });
  }

  /** Send a domain's messages on the pair sessions (dropped while a peer has none: Raft resends). */
  pumpDomain(dom: DomainHost): void {
    dom.drain((peer, payload) => void this.table.sendPayload(peer, payload));
    this.flushTable();
  }

  /**
   * The pair had an input: its writes must reach the disk, then its events and datagrams go
   * out. Done by the commit pass at the end of this turn of the event loop, so every input of
   * the turn shares one batch (and one fsync per file) per pair.
   */
  pump(link: PeerLink, charge = true): void {
    const l = this.links.get(link.name)!;
    if (l.fenced) return;
    this.dirty.add(l);
    if (charge) this.charged.add(l);
    if (!this.commitQueued) {
      this.commitQueued = true;
      setImmediate(() => this.commit());
    }
  }

  /**
   * One commit pass: the touched pairs collapse (even without a session), each one's writes
   * are made durable as one batch, and only then are its events published and its datagrams
   * sent. A store failure fences that pair alone. Sending can collapse more (new writes):
   * those pairs go round again.
   */
  private commit(final = false): void {
    this.commitQueued = false;
    if (this.storesClosed || this.stopping) return;
    for (let round = 0; this.dirty.size > 0; round++) {
      if (round === (final ? FINAL_COMMIT_ROUNDS : 8)) {
        // At stop: what still collapses after this many rounds is not acknowledged; it stays pending.
        // Elsewhere (a peer's removal) the rest goes on at the next turn.
        if (final) {
          if (!this.stopRequested && !this.commitQueued) {
            this.commitQueued = true;
            setImmediate(() => this.commit());
          }
          break;
        }
        // Still writing: leave the rest to the next turn rather than starve the loop.
        this.commitQueued = true;
        setImmediate(() => this.commit());
        break;
      }
      const links = [...this.dirty];
      const charged = new Set(this.charged);
      this.dirty.clear();
      this.charged.clear();
      this.commits.passes++;
      const now = this.now();
      // The pair's CPU is charged to its peer when the peer's input caused it (never for local
      // writes alone: a busy local writer must not make its peer look busy); the disk's time never.
      // Not a pair whose batch is syncing: what a read may see stays what is durable until it ends.
      for (const link of links) if (!link.syncing) this.forPeer(link, 'collapse', () => link.pair.collapse(now), charged.has(link));
      const released: Link[] = [];
      for (const link of links) {
        if (link.fenced) continue;
        if (link.syncing) {
          // One batch per store at a time: this pair's input waits for the release, which pumps it again.
          if (link.redo !== 'charged') link.redo = charged.has(link) ? 'charged' : 'free';
          continue;
        }
        const writes = link.pair.pollWrites();
        if (writes.length > 0) {
          link.batchesTaken++;
          let fds: number[];
          try {
            fds = link.store.write(writes);
            // Off the event loop (its fsyncs, and the snapshots of registers it replaced), unless the daemon is
            // stopping or the pair going: then its store closes next.
            if ((fds.length > 0 || link.store.staging) && !final && !this.stopRequested && !link.removing) {
              this.syncInBackground(link, fds, writes.length, charged.has(link));
              continue;
            }
            // At a stop (the loop's last pass) or with nothing to fsync: done here, as one step.
            link.store.syncNow(fds);
            link.store.batchDurable();
          } catch (e) {
            this.fence(link, 'store', e, 'store-failed');
            continue;
          }
          this.writesDurable(link, writes.length);
        }
        released.push(link);
      }
      for (const link of released) {
        this.serveReaders(link);
        this.transmit(link, charged.has(link), () => this.dirty.add(link));
        this.serveBatchWaiters(link);
      }
    }
    if (!this.stopping) {
      this.drain(this.now()); // a fence closes sessions
      this.schedule();
    }
  }

  /**
   * Group commit off the event loop: the batch is written, its fsyncs run on libuv's thread pool
   * together with every other pair's of this pass, and only once they are done does anything
   * the batch caused leave (HalfPair releases nothing before `writesDurable`). A failure fences
   * this pair alone, as a failed write does.
   */
  private syncInBackground(link: Link, fds: number[], writes: number, charge: boolean): void {
    this.commits.syncing++;
    let done!: () => void;
    link.syncing = new Promise<void>((resolve) => (done = resolve));
    const ended = (failed?: Error): void => {
      this.syncsEnded.push({ link, writes, charge, done, failed });
      if (this.releaseQueued) return;
      this.releaseQueued = true;
      setImmediate(() => this.releaseSynced());
    };
    link.store.syncAll(fds).then(() => ended(), ended);
  }

  /**
   * Release the batches whose fsyncs ended in this turn of the event loop, together (each fsync
   * completes in a callback of its own: released one by one, every admin client would get one
   * write per pair instead of one per turn).
   */
  private releaseSynced(): void {
    this.releaseQueued = false;
    const ended = this.syncsEnded;
    this.syncsEnded = [];
    let fenced = false;
    for (const e of ended)
      try {
        fenced = this.synced(e) || fenced;
      } catch (err) {
        // That pair's bug (`done()` ran first): fenced there; the other batches are still released.
        this.fence(e.link, 'release', err);
        fenced = true;
      }
    if (fenced) this.drain(this.now()); // their sessions close
    if (!this.stopping) this.schedule();
  }

  /** One batch's fsyncs ended: release what it caused, or fence the pair. True if it fenced it. */
  private synced({ link, writes, charge, done, failed }: EndedSync): boolean {
    this.commits.syncing--;
    link.syncing = undefined;
    done();
    // Removed, fenced meanwhile, or the stores closed: nothing of the batch may be released.
    if (this.links.get(link.name) !== link || link.fenced || this.storesClosed || this.stopping) return false;
    try {
      if (failed) throw failed;
      link.store.batchDurable();
    } catch (e) {
      this.fence(link, 'store', e, 'store-failed');
      return true;
    }
    this.writesDurable(link, writes);
    this.serveReaders(link);
    this.transmit(link, charge, () => this.pump(link, charge));
    // Input a pass skipped meanwhile (a write to collapse: with no session, sending collapses nothing).
    if (link.redo !== 'no') this.pump(link, charge || link.redo === 'charged');
    link.redo = 'no';
    this.serveBatchWaiters(link);
    return link.fenced !== undefined;
  }

  private writesDurable(link: Link, writes: number): void {
    link.pair.writesDurable();
    link.batchesDurable = link.batchesTaken;
    this.commits.batches++;
    this.commits.writes += writes;
  }

  /**
   * After a release's transmit (whose outcomes go first): the waiters whose batch is durable, and
   * all of them once the pair has nothing more to write (a candidate it cannot collapse, under a
   * register mismatch, makes no batch). None while the peer is being removed: its removal ends them.
   */
  private serveBatchWaiters(link: Link): void {
    if (link.batchWaiters.length === 0 || link.removing) return;
    const all = this.settled(link);
    const due: (() => void)[] = [];
    const wait: typeof link.batchWaiters = [];
    for (const w of link.batchWaiters)
      if (all || w.batch <= link.batchesDurable) due.push(w.run);
      else wait.push(w);
    link.batchWaiters = wait;
    for (const run of due) run();
  }

  /**
   * The batch that will hold what `link`'s pair records from now (a proposal's pending record and
   * lease, the sequencer's collapse of it in the pass that follows): give it to `whenBatchDurable`.
   */
  nextBatch(link: PeerLink): number {
    return (this.links.get(link.name) ?? (link as Link)).batchesTaken + 1;
  }

  /**
   * Run `run` once batch `batch` of `link` is durable, or at once if nothing of the pair waits
   * for the disk; also when the pair is fenced or removed meanwhile (`run` looks at which).
   * What may be said of a candidate before its outcome (its number, "pending") is said only
   * then: a crash before loses it, and nobody may have been told of it.
   */
  whenBatchDurable(link: PeerLink, batch: number, run: () => void): void {
    const l = this.links.get(link.name);
    if (l !== link || l.fenced || l.batchesDurable >= batch || this.settled(l)) return run();
    l.batchWaiters.push({ batch, run });
    this.pump(l, false);
  }

  /** Nothing of the pair waits for the disk: no batch syncing, no write to take, no pass owed to it (one may collapse). */
  private settled(link: Link): boolean {
    return !link.syncing && !link.pair.awaitingWrites && !this.dirty.has(link);
  }

  /** Release what a durable batch caused (events, datagrams); `again` when the sending collapsed more. */
  private transmit(link: Link, charge: boolean, again: () => void): void {
    this.forPeer(
      link,
      'transmit',
      () => {
        this.publish(link);
        this.flushTransmit(link);
        this.publish(link);
        if (link.pair.awaitingWrites) {
          again();
          if (charge) this.charged.add(link);
        }
      },
      charge,
    );
  }

  /**
   * Run `read` on what `link`'s pair holds durably. At the sequencer: at once when none of it
   * waits for the disk, else at the pair's next durable point (its batch synced, before it
   * decides anything more), so that no read sees a collapse a crash here could undo and decide
   * otherwise. At the follower: at once. What it applied is already durable at the sequencer
   * (under its fsync `always`), and waiting for its own disk would not help. A follower applies
   * records as they arrive, so at any point its state may be ahead of its own disk.
   */
  durableRead<T>(link: PeerLink, read: () => T): T | Promise<T> {
    const l = this.links.get(link.name);
    if (l !== link || l.fenced || l.pair.role !== 'sequencer' || (!l.syncing && !l.pair.awaitingWrites)) return read();
    this.pump(l, false); // its writes are committed by the next pass (or its batch's end)
    return new Promise<T>((resolve, reject) =>
      l.readers.push(() => {
        try {
          resolve(read());
        } catch (e) {
          reject(e);
        }
      }),
    );
  }

  private serveReaders(link: Link): void {
    if (link.readers.length === 0) return;
    const readers = link.readers;
    link.readers = [];
    for (const r of readers) r();
  }

  /** Until every batch syncing off the event loop has ended (a stop or a removal waits, then writes at once). */
  private async syncsSettled(links: () => Iterable<Link> = () => this.links.values()): Promise<void> {
    for (let pending = [...links()].filter((l) => l.syncing); pending.length > 0; pending = [...links()].filter((l) => l.syncing))
      await Promise.all(pending.map((l) => l.syncing));
  }

  private flushTransmit(link: PeerLink): void {
    const now = this.now();
    const to = link.addr;
    if (!this.table.canSend(link.name) || !to) return;
    for (let d = link.pair.pollTransmit(now); d; d = link.pair.pollTransmit(now)) this.sendDatagram(d, to);
  }

  private publish(link: PeerLink): void {
    for (let ev = link.pair.pollEvent(); ev; ev = link.pair.pollEvent()) {
      if (ev.type === 'lifecycle') {
        // Every write goes ENTANGLED → COLLAPSING → ENTANGLED: routine, at debug; the rest at info.
        const routine =
          (ev.from === PairState.ENTANGLED && ev.to === PairState.COLLAPSING) ||
          (ev.from === PairState.COLLAPSING && ev.to === PairState.ENTANGLED);
        if (routine) this.log.debug({ peer: link.name, from: ev.from, to: ev.to, cause: ev.cause }, 'lifecycle');
        else {
          const suppressed = this.lifecycleLines.admit(this.now(), `${link.name}:${ev.from}>${ev.to}`);
          const shown = this.lifecycleShown.get(link.name) ?? { to: ev.from, left: 0 };
          this.lifecycleShown.set(link.name, shown);
          if (suppressed === undefined) {
            this.warns.suppressed++;
            shown.left++;
            // Where the pair ends up is logged once the window is over, if no line said it by then.
            shown.owed ??= setTimeout(() => this.lifecycleSettled(link.name), this.lifecycleLines.intervalMs).unref();
          } else {
            shown.to = ev.to;
            shown.left = 0;
            this.log.info(
              { peer: link.name, from: ev.from, to: ev.to, cause: ev.cause, ...(suppressed > 0 ? { suppressed } : {}) },
              'lifecycle',
            );
          }
        }
        const diffs = link.pair.registerMismatch;
        if (diffs && ev.cause.startsWith(`${LifecycleEvent.RegisterMismatch}:`)) {
          // Once per mismatch found (the core reports each once), and at most once a minute per peer.
          const suppressed = this.warns.admit(this.now(), `mismatch:${link.name}`);
          if (suppressed !== undefined)
            this.log.warn(
              { peer: link.name, registers: diffs, suppressed },
              `register mismatch with peer ${link.name}: ${describeDiffs(diffs, link.name)}; the pair stays decoherent and refuses writes until both configurations declare the same registers (fix and restart spookd)`,
            );
        }
      } else if (ev.type === 'reentangled')
        this.log.info({ peer: link.name, register: ev.register, method: ev.method, version: ev.version }, 're-entangled');
      else if (ev.type === 'drop') this.log.debug({ peer: link.name, reason: ev.reason, detail: ev.detail }, 'pair drop');
      for (const s of this.subscribers) s(link, ev);
    }
  }

  /** A peer's lifecycle lines left some transitions out: log where its pair is if the last line did not say so. */
  private lifecycleSettled(peer: string): void {
    const shown = this.lifecycleShown.get(peer);
    const link = this.links.get(peer);
    if (!shown) return;
    shown.owed = undefined;
    if (this.stopping || !link) return void this.lifecycleShown.delete(peer);
    // COLLAPSING is ENTANGLED with a write under way (routine, not logged at info).
    const now = link.pair.state === PairState.COLLAPSING ? PairState.ENTANGLED : link.pair.state;
    if (now !== shown.to)
      this.log.info({ peer, from: shown.to, to: now, cause: 'transitions left out of the log', suppressed: shown.left }, 'lifecycle');
    shown.to = now;
    shown.left = 0;
  }

  /** Handshakes to start or renew, sessions to retire (the table's timers), pair timers to run; then re-arm. */
  private tick(): void {
    if (this.stopping) return;
    const now = this.now();
    this.rekeyTimers();
    this.table.handleTimeout(now);
    this.drain(now);
    // Only the pairs whose timer is due, from the heap: sweeping them all made every deadline of
    // any one pair a pass over all of them (bench scale). They are re-keyed once handled (forPeer).
    const due: Link[] = [];
    for (let l = this.pairTimers.popDue(now); l; l = this.pairTimers.popDue(now)) due.push(l);
    for (const link of due)
      this.forPeer(link, 'timer', () => {
        link.pair.handleTimeout(now);
        this.pump(link); // charged: the peer's traffic armed these timers
      });
    this.commit(); // the timers' writes, one batch per pair, then their datagrams
    for (const dom of this.domains.values()) {
      if (dom.node.fencedCause) continue;
      dom.tick(now);
      this.pumpDomain(dom);
    }
    this.drain(now); // what the timers made the table count or send
    this.schedule();
  }

  /**
   * Re-arm once at the end of this turn of the event loop, whatever number of datagrams it read
   * (re-arming per datagram, when schedule() still visited every pair, made a hub's work grow
   * with the square of its peers, bench scale); schedule() now re-keys only the pairs stepped.
   */
  private scheduleSoon(): void {
    if (this.scheduleQueued) return;
    this.scheduleQueued = true;
    setImmediate(() => {
      this.scheduleQueued = false;
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.stopping) return;
    const now = this.now();
    this.rekeyTimers();
    // At least every HANDSHAKE_RETRY_MS, whatever the cores ask.
    let next = Math.min(now + HANDSHAKE_RETRY_MS, this.table.pollTimeout() ?? Infinity, this.pairTimers.peek() ?? Infinity);
    for (const dom of this.domains.values()) if (!dom.node.fencedCause) next = Math.min(next, dom.node.pollTimeout());
    this.timer = setTimeout(() => this.tick(), Math.max(0, Math.ceil(next - now)));
  }

  /**
   * Re-key the pairs stepped since the last call: their own deadlines in `pairTimers`, and
   * their peers' in the table (whose handshake timers follow the pair's state).
   */
  private rekeyTimers(): void {
    for (const link of this.timersStale) {
      let at: number | undefined;
      if (!link.fenced)
        try {
          at = link.pair.pollTimeout();
          // A NaN deadline would break the heap every pair's timers share: that pair's bug, fenced there.
          if (at !== undefined && Number.isNaN(at)) throw new RangeError('pollTimeout returned NaN');
        } catch (e) {
          this.fence(link, 'timer', e); // fenced: it leaves the heap below
        }
      this.pairTimers.set(link, link.fenced ? undefined : at);
      this.table.refresh(link.name);
    }
    this.timersStale.clear();
  }

  link(peer: string | undefined): PeerLink {
    if (peer === undefined) {
      if (this.links.size === 1) return [...this.links.values()][0];
      throw new Error(`several peers are configured (${[...this.links.keys()].join(', ')}): name one with --peer`);
    }
    const l = this.links.get(peer);
    if (!l) throw new Error(`no peer named ${peer} (configured: ${[...this.links.keys()].join(', ')})`);
    return l;
  }

  domain(name: string | undefined): DomainHost {
    if (name === undefined) {
      if (this.domains.size === 1) return [...this.domains.values()][0];
      throw new Error(
        this.domains.size === 0
          ? 'no domains are configured'
          : `several domains are configured (${[...this.domains.keys()].join(', ')}): name one with --domain`,
      );
    }
    const d = this.domains.get(name);
    if (!d) throw new Error(`no domain named ${name} (configured: ${[...this.domains.keys()].join(', ') || 'none'})`);
    return d;
  }

  kickDomain(dom: DomainHost): void {
    // Its flush is queued (group commit): that sends and re-arms the timer once for the whole
    // turn, not once per request.
    if (this.dirtyDomains.has(dom)) return;
    this.pumpDomain(dom);
    this.schedule();
  }

  /** After a local proposal: collapse/send at once rather than at the next timer. */
  kick(link: PeerLink): void {
    this.forPeer(link, 'local write', () => this.pump(link, false), false);
    this.drain(this.now()); // a fence closes sessions
    this.schedule();
  }
}

/** What the UDP socket asks for as receive buffer (SO_RCVBUF). */
const RECV_BUFFER_BYTES = 4 << 20;

/** Descriptors a pair's store holds open while it runs: a log, a pending list and a lease per register (DiskStore). */
function storeDescriptors(pair: HalfPair): number {
  return 3 * pair.registers.size;
}

/** A store given up before anything was written to it (a peer whose addition failed): its files closed, errors aside. */
function closeQuietly(store: DiskStore): void {
  try {
    store.close();
  } catch {
    // nothing was accepted into it
  }
}

/**
 * A configured endpoint as the UDP socket bound to `listen` sends to it and reports its datagrams'
 * sources. On an IPv6 `listen` (udp6, dual-stack: `[::]` receives IPv4 too) an IPv4 address is
 * written IPv4-mapped (`::ffff:a.b.c.d`): a udp6 socket refuses to send to a bare IPv4 address
 * (EINVAL, every HandshakeInit lost), and it reports an IPv4 sender so, which the exemptions
 * seeded from this address (§12.8, §12.9) and roaming compare against.
 */
function toAddr(s: string | undefined, listen: string): { address: string; port: number } | undefined {
  const hp = s === undefined ? undefined : parseHostPort(s);
  if (!hp) return undefined;
  const mapped = isIPv4(hp.host) && isIPv6(parseHostPort(listen)?.host ?? '');
  return { address: mapped ? `::ffff:${hp.host}` : canonicalIPv6(hp.host), port: hp.port };
}

/**
 * An IPv6 address as the socket names a datagram's source (inet_ntop: lower case, no leading
 * zeros, the longest run of zero groups as `::`, an IPv4-mapped one dotted). The exemptions,
 * roaming and the CookieReply check compare sources by text: a peer written `2001:DB8:0::1`
 * never matched `2001:db8::1` (under a handshake flood, its inits and its cookies were dropped).
 */
function canonicalIPv6(host: string): string {
  if (!isIPv6(host)) return host;
  const zone = host.indexOf('%');
  try {
    // SocketAddress formats with inet_ntop, as the socket formats a source; it leaves out a zone id.
    const c = new SocketAddress({ address: zone < 0 ? host : host.slice(0, zone), family: 'ipv6' }).address;
    // The socket names a source's zone only for a link-local one (fe80::/10): held elsewhere,
    // `fd00::2%eth0` never matched `fd00::2`, and its CookieReplies were refused.
    return zone < 0 || !/^fe[89ab][0-9a-f]:/.test(c) ? c : c + host.slice(zone);
  } catch {
    return host;
  }
}
