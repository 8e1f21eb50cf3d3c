/**
 * spookd: drives the sans-I/O core over a real UDP socket. One HalfPair per configured
 * peer (all configured registers on it), ETCP sessions for pair formation and frame
 * protection, a DiskStore per pair, an admin API on a Unix socket.
 *
 * The loop is the simulator's loop with real inputs: a datagram or a timer arrives, the
 * core handles it, then events are published and datagrams sent, and the one timer is
 * re-armed at the earliest deadline of any pair.
 */
import { createSocket, type RemoteInfo, type Socket } from 'node:dgram';
import { isIPv6 } from 'node:net';
import { join } from 'node:path';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import type { Logger } from 'pino';
import { decodeFrame, isHandshakeType } from '../../wire/header.js';
import { DROP_REASON_NAMES } from '../../wire/constants.js';
import { WireError } from '../../wire/errors.js';
import { EtcpEndpoint, MAX_SEALED_PAYLOAD, pairIdentity, type Session } from '../../core/etcp/endpoint.js';
import { randomBytes } from 'node:crypto';
import type { KeyPair } from '../../crypto/primitives.js';
import { HalfPair } from '../../core/pair/halfpair.js';
import type { SpookEvent } from '../../core/pair/events.js';
import { PairState } from '../../core/pair/lifecycle.js';
import { DiskStore } from '../store/store.js';
import { decodeKey, encodeKey } from './keys.js';
import { parseHostPort, type SpookdConfig } from './config.js';
import { AdminServer } from '../admin/server.js';
import { Metrics } from '../admin/metrics.js';
import { FastPath } from './fastpath.js';
import { WarnLimiter } from '../../core/util/warn-limiter.js';
import { BudgetPool, SourceBudgets, type WorkBudget } from '../../core/etcp/budget.js';
import { DomainHost } from './domains.js';
import { QN_MSG_TYPE } from '../../wire/qn.js';
import { WrapManager } from '../wrap/manager.js';

/** Re-handshake this often (fresh keys, as WireGuard's REKEY_AFTER_TIME). */
export const REKEY_AFTER_MS = 120_000;
/** Retry an unanswered HandshakeInit after this long. */
export const HANDSHAKE_RETRY_MS = 2_000;
/** A superseded session still opens frames until it has been idle this long. */
const OLD_SESSION_GRACE_MS = 30_000;
/** Sessions we answered and the peer has not used yet, kept per peer (the oldest goes first). */
const MAX_UNCONFIRMED = 4;
/** Superseded sessions kept per peer (the oldest goes first): a peer handshaking in a loop holds no more. */
const MAX_OLD_SESSIONS = 2;
/** CPU per second that Data frames failing to open may cost per source address (§12.9), and addresses tracked. */
const SOURCE_FAILURE_BUDGET_MS = 20;
const MAX_FAILING_SOURCES = 1024;
/** Member 2 (the follower) lets member 1 handshake first at start-up. */
const MEMBER2_FIRST_CONTACT_DELAY_MS = 1_500;
/** While the pair is decoherent, try a fresh handshake this often. */
const DECOHERENT_REHANDSHAKE_MS = 5_000;
/** Pair drops that only an authenticated peer can cause: protocol violations, counted toward the limit. */
// (Unknown message types are skipped, not violations: later revisions may add some, §3.1.)
const VIOLATIONS = ['malformed-payload', 'unknown-register', 'wrong-origin', 'propose-to-follower'];

export interface PeerLink {
  name: string;
  publicKey: Uint8Array;
  /** Where frames go: configured, then learned from authenticated frames (roaming). */
  addr: { address: string; port: number } | undefined;
  readonly pair: HalfPair;
  store: DiskStore;
  session: Session | undefined;
  /** `until` moves with every frame opened on the session, never past `deadline` (§12.6). */
  oldSessions: { session: Session; until: number; deadline: number }[];
  /** Sessions we answered that the peer has not used yet. */
  unconfirmed: { session: Session; until: number }[];
  lastInitAt: number;
  violations: number;
  disconnects: number;
  /** CPU time this peer's datagrams may take (§12.9). */
  budget: WorkBudget;
  /** Set when handling this peer threw unexpectedly: the pair is no longer driven until a restart. */
  fenced: Fence | undefined;
}

export interface Fence {
  cause: 'internal-error';
  error: string;
  at: number;
}

export class Spookd {
  readonly links = new Map<string, PeerLink>();
  readonly drops: Record<string, number> = {};
  /** Refused-handshake warnings, one per source address per minute. */
  readonly warns = new WarnLimiter();
  /** Data frames that fail to open are charged here, by source address, not to the peer (§12.9). */
  readonly failing = new SourceBudgets(SOURCE_FAILURE_BUDGET_MS, MAX_FAILING_SOURCES);
  private readonly etcp: EtcpEndpoint;
  private socket: Socket | undefined;
  private timer: NodeJS.Timeout | undefined;
  private stopping = false;
  private admin: AdminServer | undefined;
  private metrics: Metrics | undefined;
  readonly fastPath: FastPath;
  private readonly startedAt = performance.now();
  readonly subscribers = new Set<(link: PeerLink, ev: SpookEvent) => void>();
  /** QN domains by name; their messages ride the pair sessions. */
  readonly domains = new Map<string, DomainHost>();
  /** The peers' work budgets (§12.9): work-conserving, so a peer is held back only while another is busy. */
  private readonly budgets = new BudgetPool(() => this.now());
  /** Wrapped TCP connections: carriers to the peers, interception, per-connection streams. */
  readonly wraps: WrapManager;

  constructor(
    readonly cfg: SpookdConfig,
    readonly key: KeyPair,
    readonly log: Logger,
  ) {
    const peers = cfg.peers.map((p) => ({ name: p.name, publicKey: decodeKey(p.publicKey, `peer ${p.name}`) }));
    // The last accepted HandshakeInit timestamp per peer survives restarts (replayed inits stay refused).
    const initFile = (peer: string): string => join(cfg.dataDir, peer, 'last-init');
    const acceptedInits = new Map<string, number>();
    for (const p of peers) {
      try {
        const ts = Number(readFileSync(initFile(p.name), 'utf8').trim());
        if (Number.isSafeInteger(ts)) acceptedInits.set(p.name, ts);
      } catch {
        /* none yet */
      }
    }
    this.etcp = new EtcpEndpoint({
      staticKey: key,
      peers,
      random: (n) => new Uint8Array(randomBytes(n)),
      acceptedInits,
      cookieThreshold: cfg.handshakes.cookieThreshold,
      perSourceLimit: cfg.handshakes.perSourceLimit,
      perPeerLimit: cfg.handshakes.perPeerLimit,
      // Sources are `address:port`; a peer's exemption covers its address, seeded with its configured endpoint.
      sourceHost: (s) => s.slice(0, s.lastIndexOf(':')),
      knownSources: cfg.peers
        .filter((p) => p.endpoint)
        .map((p) => {
          const a = toAddr(p.endpoint!);
          return { peer: p.name, source: `${a.address}:${a.port}` };
        }),
      onInitAccepted: (peer, ts) => {
        try {
          mkdirSync(join(cfg.dataDir, peer.name), { recursive: true, mode: 0o700 });
          writeFileSync(initFile(peer.name), `${ts}\n`, { mode: 0o600 });
        } catch (e) {
          log.warn({ peer: peer.name, error: (e as Error).message }, 'cannot persist the handshake timestamp');
        }
      },
    });
    this.fastPath = new FastPath(cfg, log);
    for (const p of cfg.peers) {
      const publicKey = decodeKey(p.publicKey, `peer ${p.name}`);
      const ids = pairIdentity(key.publicKey, publicKey);
      const store = new DiskStore(join(cfg.dataDir, p.name), cfg.fsync, undefined, (e) => {
        // Fail-stop: a committed version that is not on disk must never leave the host.
        log.fatal({ error: e.message }, 'durable storage failed; stopping');
        process.exit(70);
      });
      // The sealer reads the link's session when a frame goes out (the link is built just below).
      const pair = new HalfPair(
        {
          pairId: 0,
          localId: ids.localId,
          peerId: ids.peerId,
          seed: ids.seed,
          registers: cfg.registers.map((r) => ({
            name: r.name,
            kind: r.kind,
            policy: r.policy,
            maxPending: r.maxPending,
            log: { maxRecords: r.logRecords, maxBytes: 256 * 1024 * 1024 },
            quota: { maxKeys: r.maxKeys, maxBytes: r.maxBytes },
          })),
          timing: { keepaliveMs: cfg.timing.keepaliveMs, silenceMs: cfg.timing.silenceMs },
          maxPayload: MAX_SEALED_PAYLOAD,
          store,
          sealer: {
            seal: (payload) => {
              const s = link.session!;
              const frame = s.seal(payload);
              return { frame, packetNumber: s.packetsSent - 1 };
            },
          },
        },
        this.now(),
      );
      const link: PeerLink = {
        name: p.name,
        publicKey,
        addr: p.endpoint ? toAddr(p.endpoint) : undefined,
        pair,
        store,
        session: undefined,
        oldSessions: [],
        unconfirmed: [],
        lastInitAt: -Infinity,
        violations: 0,
        disconnects: 0,
        budget: this.budgets.add(cfg.peerBudgetMs),
        fenced: undefined,
      };
      for (const r of link.pair.registers.values()) {
        const rep = store.load(r);
        log.info({ peer: p.name, ...rep }, rep.tornBytes > 0 ? 'register loaded; torn log tail cut' : 'register loaded');
      }
      log.info({ peer: p.name, role: link.pair.role }, 'pair configured');
      this.links.set(p.name, link);
    }
    for (const dc of cfg.domains) this.domains.set(dc.name, new DomainHost(dc, key, peers, cfg.dataDir, cfg.fsync, log, this.now()));
    const listen = parseHostPort(cfg.listen)!;
    const intercept = parseHostPort(cfg.wrap.intercept, true)!;
    this.wraps = new WrapManager(
      {
        key,
        peers: [...this.links.values()].map((l) => ({ name: l.name, publicKey: l.publicKey, role: l.pair.role === 'sequencer' ? 0 : 1 })),
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
        allow: cfg.wrap.allow.map((r) => ({ ...r, peer: r.peer === '*' ? '*' : this.peerName(r.peer) })),
      },
      cfg.wrap.wrappers.map((w) => ({ protocol: w.protocol, port: w.port, peer: this.peerName(w.peer), holdMs: w.hold, delta: w.delta })),
      log.child({ component: 'wrap' }),
    );
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

  private get graceMs(): number {
    return this.cfg.timing.sessionGraceMs ?? OLD_SESSION_GRACE_MS;
  }

  /**
   * Age (from its establishment) past which a superseded session opens nothing, however
   * often the peer sends on it: the rekey period plus two grace periods (180 s by default,
   * WireGuard's REJECT_AFTER_TIME). Its initiator has rekeyed it by then.
   */
  private get oldSessionMaxAgeMs(): number {
    return (this.cfg.timing.rekeyAfterMs ?? REKEY_AFTER_MS) + 2 * this.graceMs;
  }

  get uptimeMs(): number {
    return this.now() - this.startedAt;
  }

  async start(): Promise<void> {
    const listen = parseHostPort(this.cfg.listen)!;
    const sock = createSocket({ type: isIPv6(listen.host) ? 'udp6' : 'udp4', reuseAddr: false });
    sock.on('message', (msg, rinfo) => this.onDatagramSafe(new Uint8Array(msg.buffer, msg.byteOffset, msg.byteLength), rinfo));
    sock.on('error', (e) => this.log.error({ err: e }, 'UDP socket error'));
    await new Promise<void>((resolve, reject) => {
      sock.once('error', reject);
      sock.bind(listen.port, listen.host, () => {
        sock.off('error', reject);
        resolve();
      });
    });
    this.socket = sock;
    this.log.info({ listen: this.cfg.listen, publicKey: encodeKey(this.key.publicKey) }, 'listening');
    this.fastPath.start(listen.port);
    this.admin = new AdminServer(this, this.cfg.adminSocket, this.log);
    await this.admin.start();
    if (this.cfg.metrics) {
      this.metrics = new Metrics(this, this.cfg.metrics.listen, this.log);
      await this.metrics.start();
    }
    await this.wraps.start();
    for (const link of this.links.values()) this.pump(link);
    this.schedule();
  }

  /**
   * Stop in an order that loses nothing: no more input (datagrams, timers, admin), then tell
   * the peers we are going away, close the socket, and only then close the stores.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.timer) clearTimeout(this.timer);
    await this.admin?.stop();
    await this.metrics?.stop();
    await this.wraps.stop(); // interception ends before anything else: new connections go direct
    for (const link of this.links.values()) {
      // Not a teardown: the pair's state is on disk and the peer should expect us back.
      const bye = link.session && link.addr ? link.pair.goingAway(this.now()) : undefined;
      if (bye && link.addr)
        await new Promise<void>((resolve) => this.socket!.send(bye, link.addr!.port, link.addr!.address, () => resolve()));
    }
    await new Promise<void>((resolve) => (this.socket ? this.socket.close(() => resolve()) : resolve()));
    this.fastPath.stop();
    for (const link of this.links.values()) link.store.close();
    for (const dom of this.domains.values()) dom.close();
    this.log.info('stopped');
  }

  private drop(reason: string, detail: Record<string, unknown> = {}): void {
    this.drops[reason] = (this.drops[reason] ?? 0) + 1;
    this.log.debug({ reason, ...detail }, 'frame dropped');
  }

  /** The socket's handler: nothing a datagram does may end the process (§12.9). */
  private onDatagramSafe(buf: Uint8Array, rinfo: RemoteInfo): void {
    try {
      this.onDatagram(buf, rinfo);
    } catch (e) {
      // Not attributable to a peer (the per-peer handlers fence their own): count, warn rate-limited.
      this.drops['internal-error'] = (this.drops['internal-error'] ?? 0) + 1;
      const suppressed = this.warns.admit(this.now(), `internal:${rinfo.address}`);
      if (suppressed !== undefined)
        this.log.error({ err: e, from: `${rinfo.address}:${rinfo.port}`, suppressed }, 'internal error handling a datagram; dropped');
    }
  }

  /**
   * Run `fn` for one peer: time it against the peer's budget, and fence the peer (never the
   * process) if it throws.
   */
  private forPeer(link: PeerLink, what: string, fn: () => void, charge = true): void {
    if (link.fenced) return;
    const t0 = performance.now();
    try {
      fn();
    } catch (e) {
      this.fence(link, what, e);
    } finally {
      if (charge) link.budget.charge(performance.now() - t0);
    }
  }

  /** Stop driving a pair whose handling threw: its sessions close, other peers carry on. */
  private fence(link: PeerLink, what: string, e: unknown): void {
    if (link.fenced) return;
    const error = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
    link.fenced = { cause: 'internal-error', error, at: this.now() };
    this.drops['internal-error'] = (this.drops['internal-error'] ?? 0) + 1;
    this.log.error(
      { peer: link.name, while: what, err: e },
      'internal error: pair fenced (decoherent, cause internal-error) until spookd restarts; other peers carry on',
    );
    try {
      // Watchers see the pair decohere; the pair's own state may be what broke, so this may throw too.
      link.pair.fence(this.now(), `${what}: ${error}`);
      this.publish(link);
    } catch (e2) {
      this.log.error({ peer: link.name, err: e2 }, 'fenced pair could not record its lifecycle');
    }
    this.dropSessions(link);
  }

  /** Forget every session of a peer (their indices leave the pair table and the XDP map): a new handshake is needed. */
  private dropSessions(link: PeerLink): void {
    if (link.session) this.closeSession(link.session.localIndex);
    for (const o of [...link.oldSessions, ...link.unconfirmed]) this.closeSession(o.session.localIndex);
    link.session = undefined;
    link.oldSessions = [];
    link.unconfirmed = [];
  }

  private onDatagram(buf: Uint8Array, rinfo: RemoteInfo): void {
    if (this.stopping) return;
    const now = this.now();
    let frame;
    try {
      frame = decodeFrame(buf, (id) => this.etcp.sessions.has(id));
    } catch (e) {
      if (!(e instanceof WireError)) throw e;
      this.drop(DROP_REASON_NAMES[e.reason], { from: `${rinfo.address}:${rinfo.port}`, error: e.message });
      return;
    }
    if (isHandshakeType(frame.header.type)) return this.onHandshake(now, buf, rinfo);
    // Over its work budget, a peer's frames are dropped before the AEAD (which costs too).
    const target = this.etcp.sessions.get(frame.header.pairId);
    const peerLink = target ? this.links.get(target.peer.name) : undefined;
    // So is a source address in debt for frames that failed to open, unless it is the address the named
    // peer authenticated from (else whoever spoofs that address, from any port, could cut the peer off).
    const peerAddr = peerLink?.addr !== undefined && peerLink.addr.address === rinfo.address;
    if (!peerAddr && !this.failing.admit(now, rinfo.address)) {
      this.drop('source-over-budget', { from: `${rinfo.address}:${rinfo.port}` });
      return;
    }
    if (peerLink && !peerLink.budget.admit(now)) {
      this.drop('peer-over-budget', { peer: peerLink.name });
      return;
    }
    const t0 = performance.now();
    const opened = this.etcp.openData(buf, frame.header.pairId, frame.header.packetNumber);
    const took = performance.now() - t0;
    if ('drop' in opened) {
      // Not the peer's work: anyone who sees pair ids can send frames that fail (§12.9).
      this.failing.charge(now, rinfo.address, took);
      this.drop(opened.drop, { from: `${rinfo.address}:${rinfo.port}`, detail: opened.detail });
      return;
    }
    peerLink?.budget.charge(took);
    const link = this.links.get(opened.session.peer.name)!;
    this.forPeer(link, 'data frame', () => {
      link.addr = { address: rinfo.address, port: rinfo.port }; // roaming: follow authenticated frames
      const old = link.oldSessions.find((o) => o.session === opened.session);
      if (old)
        old.until = Math.min(now + this.graceMs, old.deadline); // the peer still sends on it: keep it open, within its hard limit
      else if (opened.session !== link.session) {
        // The first data frame on a session we answered: it is now the one we send on.
        this.adopt(link, opened.session, now);
      }
      if (opened.payload[0] === QN_MSG_TYPE) {
        this.onDomainPayload(now, link, opened.payload);
        return;
      }
      link.pair.handlePayload(now, frame.header.packetNumber, opened.payload, buf.length);
      this.checkViolations(link, now);
      this.pump(link);
    });
    this.schedule();
  }

  private onDomainPayload(now: number, link: PeerLink, payload: Uint8Array): void {
    const id = payload.length >= 5 ? ((payload[1] << 24) | (payload[2] << 16) | (payload[3] << 8) | payload[4]) >>> 0 : -1;
    const dom = [...this.domains.values()].find((d) => d.id === id);
    const from = dom?.idOf.get(link.name);
    if (!dom || from === undefined) {
      this.drop('unknown-domain', { peer: link.name });
      return;
    }
    if (dom.node.fencedCause) {
      this.drop('domain-fenced', { peer: link.name, domain: dom.cfg.name });
      return;
    }
    // DomainHost guards the node: an exception fences that domain (§12.9), never this pair or the process.
    dom.handleDatagram(now, from, payload);
    this.pumpDomain(dom);
  }

  /** Send a domain's messages on the pair sessions (dropped while a peer has none: Raft resends). */
  pumpDomain(dom: DomainHost): void {
    dom.drain((peer, payload) => {
      const link = this.links.get(peer);
      if (!link?.session || !link.addr) return;
      if (payload.length > MAX_SEALED_PAYLOAD) {
        this.drop('qn-oversized', { peer, bytes: payload.length });
        return;
      }
      this.socket?.send(link.session.seal(payload), link.addr.port, link.addr.address);
    });
  }

  private onHandshake(now: number, buf: Uint8Array, rinfo: RemoteInfo): void {
    const from = `${rinfo.address}:${rinfo.port}`;
    const t0 = performance.now();
    const r = this.etcp.handleHandshake(now, buf, from);
    // The DH of an init from an authorised key is that peer's work (§12.9), whatever came of it; but a
    // replayed init may come from anyone who captured one: its cost goes to the source address.
    const replay = r.kind === 'drop' && r.reason === 'handshake-replayed';
    const by =
      r.kind === 'drop' ? (replay ? undefined : r.peer) : r.kind === 'respond' || r.kind === 'established' ? r.session.peer : undefined;
    if (by) this.links.get(by.name)?.budget.charge(performance.now() - t0);
    else if (replay) this.failing.charge(now, rinfo.address, performance.now() - t0);
    if (r.kind === 'drop') {
      this.drop(r.reason, { from, detail: r.detail });
      // One warning per source address per minute; the rest are counted (drops, warnings-suppressed).
      if (r.reason === 'unauthorized-key') {
        const suppressed = this.warns.admit(now, rinfo.address);
        if (suppressed !== undefined) this.log.warn({ from, detail: r.detail, suppressed }, 'handshake refused');
      }
      return;
    }
    if (r.kind === 'cookie') {
      // Under load: the init did no DH; its sender must prove its address with the cookie (§12.8).
      this.drop('cookie-required', { from });
      this.socket?.send(r.datagram, rinfo.port, rinfo.address);
      return;
    }
    if (r.kind === 'cookie-stored') {
      this.log.debug({ peer: r.peer.name, from }, 'cookie received: the next HandshakeInit carries mac2');
      return;
    }
    const link = this.links.get(r.session.peer.name)!;
    if (link.fenced) {
      // A fenced pair forms no sessions until spookd restarts.
      this.etcp.close(r.session.localIndex);
      this.drop('peer-fenced', { peer: link.name });
      return;
    }
    this.forPeer(link, 'handshake', () => this.onSession(now, link, r, rinfo));
    this.schedule();
  }

  private onSession(
    now: number,
    link: PeerLink,
    r: { kind: 'respond'; datagram: Uint8Array; session: Session } | { kind: 'established'; session: Session },
    rinfo: RemoteInfo,
  ): void {
    link.addr = { address: rinfo.address, port: rinfo.port };
    this.fastPath.addPair(r.session.localIndex);
    if (r.kind === 'respond') {
      this.socket?.send(r.datagram, rinfo.port, rinfo.address);
      // A responder sends on the new session once the initiator proves it holds it (its first Data frame),
      // unless it has no session at all. Unconfirmed ones expire (a lost response, a retried init).
      if (!link.session) this.adopt(link, r.session, now);
      else {
        link.unconfirmed.push({ session: r.session, until: now + this.graceMs });
        // Bounded per peer: an authorised peer answering nothing cannot fill the index space.
        while (link.unconfirmed.length > MAX_UNCONFIRMED) this.closeSession(link.unconfirmed.shift()!.session.localIndex);
      }
    } else this.adopt(link, r.session, now);
    this.pump(link);
  }

  private closeSession(localIndex: number): void {
    this.etcp.close(localIndex);
    this.fastPath.removePair(localIndex);
  }

  /** Make `s` the session frames go out on; the previous one still opens frames for a while. */
  private adopt(link: PeerLink, s: Session, now: number): void {
    link.unconfirmed = link.unconfirmed.filter((u) => u.session !== s);
    if (link.session) {
      const deadline = link.session.establishedAt + this.oldSessionMaxAgeMs;
      link.oldSessions.push({ session: link.session, until: Math.min(now + this.graceMs, deadline), deadline });
      // Bounded per peer: a peer handshaking in a loop (and keeping every old session busy) holds no more.
      while (link.oldSessions.length > MAX_OLD_SESSIONS) this.closeSession(link.oldSessions.shift()!.session.localIndex);
    }
    link.session = s;
    link.pair.resetPacketSpace();
    for (const r of link.pair.registers.values()) r.markStatusDirty();
    this.log.info(
      { peer: link.name, localIndex: s.localIndex, remoteIndex: s.remoteIndex, initiator: s.initiator },
      'pair session established',
    );
  }

  private checkViolations(link: PeerLink, now: number): void {
    const total = VIOLATIONS.reduce((a, k) => a + (link.pair.stats.drops[k] ?? 0), 0);
    if (total - link.violations < this.cfg.violationLimit) return;
    link.violations = total;
    link.disconnects++;
    this.log.warn(
      { peer: link.name, violations: total },
      'peer over the protocol-violation limit: session dropped, a new handshake is required',
    );
    this.dropSessions(link);
    link.lastInitAt = now;
  }

  /** Publish events, send what the pair has, collapse even when there is no session. */
  pump(link: PeerLink): void {
    const now = this.now();
    this.publish(link);
    if (link.session && link.addr) this.flushTransmit(link);
    else link.pair.collapse(now);
    this.publish(link);
  }

  private flushTransmit(link: PeerLink): void {
    const now = this.now();
    if (!link.session || !link.addr) return;
    for (let d = link.pair.pollTransmit(now); d; d = link.pair.pollTransmit(now)) this.socket?.send(d, link.addr.port, link.addr.address);
  }

  private publish(link: PeerLink): void {
    for (let ev = link.pair.pollEvent(); ev; ev = link.pair.pollEvent()) {
      if (ev.type === 'lifecycle') this.log.info({ peer: link.name, from: ev.from, to: ev.to, cause: ev.cause }, 'lifecycle');
      else if (ev.type === 'reentangled')
        this.log.info({ peer: link.name, register: ev.register, method: ev.method, version: ev.version }, 're-entangled');
      else if (ev.type === 'drop') this.log.debug({ peer: link.name, reason: ev.reason, detail: ev.detail }, 'pair drop');
      for (const s of this.subscribers) s(link, ev);
    }
  }

  /** Handshakes to start or renew, sessions to retire, pair timers to run; then re-arm. */
  private tick(): void {
    if (this.stopping) return;
    const now = this.now();
    for (const link of this.links.values()) this.forPeer(link, 'timer', () => this.tickLink(link, now));
    for (const dom of this.domains.values()) {
      if (dom.node.fencedCause) continue;
      dom.tick(now);
      this.pumpDomain(dom);
    }
    this.schedule();
  }

  private tickLink(link: PeerLink, now: number): void {
    {
      const expire = <T extends { session: Session; until: number }>(list: T[]): T[] =>
        list.filter((o) => {
          if (o.until > now) return true;
          this.closeSession(o.session.localIndex);
          return false;
        });
      link.oldSessions = expire(link.oldSessions);
      link.unconfirmed = expire(link.unconfirmed);
      // Handshake when: no session; time to rekey (the initiator of the current session only, so
      // rekeys never cross); or the pair is decoherent (the peer may have lost our session).
      // Member 2 holds back at first contact so that, with both ends configured to connect,
      // member 1's handshake normally wins instead of two crossing.
      const s = link.session;
      const due =
        (!s && (link.pair.role === 'sequencer' || now - this.startedAt > MEMBER2_FIRST_CONTACT_DELAY_MS)) ||
        (s !== undefined && s.initiator && now - s.establishedAt > (this.cfg.timing.rekeyAfterMs ?? REKEY_AFTER_MS)) ||
        (s !== undefined && link.pair.state === PairState.DECOHERENT && now - link.lastInitAt >= DECOHERENT_REHANDSHAKE_MS);
      if (due && link.addr && now - link.lastInitAt >= HANDSHAKE_RETRY_MS && link.pair.state !== PairState.CLOSED) {
        link.lastInitAt = now;
        // A full index space is counted and retried, never an error of this pair (§12.3).
        const init = this.etcp.tryInitiate(now, link.publicKey, Date.now());
        if ('drop' in init) this.drop(init.drop, { peer: link.name });
        else this.socket?.send(init.datagram, link.addr.port, link.addr.address);
      }
      const t = link.pair.pollTimeout();
      if (t !== undefined && t <= now) link.pair.handleTimeout(now);
      this.pump(link);
    }
  }

  private schedule(): void {
    if (this.timer) clearTimeout(this.timer);
    if (this.stopping) return;
    const now = this.now();
    let next = now + HANDSHAKE_RETRY_MS;
    for (const link of this.links.values()) {
      if (link.fenced) continue;
      const t = link.pair.pollTimeout();
      if (t !== undefined) next = Math.min(next, t);
      if (!link.session && link.addr)
        next = Math.min(next, Math.max(link.lastInitAt + HANDSHAKE_RETRY_MS, this.startedAt + MEMBER2_FIRST_CONTACT_DELAY_MS));
    }
    for (const dom of this.domains.values()) if (!dom.node.fencedCause) next = Math.min(next, dom.node.pollTimeout());
    this.timer = setTimeout(() => this.tick(), Math.max(0, Math.ceil(next - now)));
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
    this.pumpDomain(dom);
    this.schedule();
  }

  /** After a local proposal: collapse/send at once rather than at the next timer. */
  kick(link: PeerLink): void {
    this.forPeer(link, 'local write', () => this.pump(link), false);
    this.schedule();
  }
}

function toAddr(s: string): { address: string; port: number } {
  const hp = parseHostPort(s)!;
  return { address: hp.host, port: hp.port };
}
