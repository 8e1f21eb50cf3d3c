/**
 * WrapManager: the I/O around WrapSession inside spookd (docs/OPERATIONS.md, "Wrappers").
 *
 * - interception: the BPF cgroup hooks send clients' connects to a wrapped port to our local
 *   intercept listener and record where they were going (control/bpf/wrap-hooks.ts);
 * - one carrier per peer (wrappers/carrier.ts): the pair's sequencer dials, the other accepts;
 * - per wrapped connection: the local socket on each side, the two stream registers in the
 *   peer's WrapSession, protocol recognition and counters.
 * Everything that decides is in WrapSession; this file moves bytes and keeps sockets honest
 * (pause on a full window, acknowledge only what the kernel took, close the way the peer did).
 */
import { createServer, connect, type Server, type Socket, type AddressInfo } from 'node:net';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { KeyPair } from '../transport/etcp/crypto.js';
import { CloseCode, CLOSE_NAMES, type Target } from './codec.js';
import { WrapSession, DEFAULT_WRAP_OPTIONS, type WrapEvent } from './session.js';
import { acceptCarrier, dialCarrier, type Carrier } from './carrier.js';
import { ProtocolStats, recognise, RECOGNISE_MAX_BYTES, type Protocol } from './profiles.js';
import { WrapHooks } from '../control/bpf/wrap-hooks.js';
import type { WrapProtocol } from './protocols.js';


export interface WrapperSpec {
  protocol: WrapProtocol;
  port: number;
  peer: string;
  holdMs: number;
  /** Delta mode (§16.9): ranges the other side already holds go as references. */
  delta?: boolean;
}

export interface WrapPeer {
  name: string;
  publicKey: Uint8Array;
  /** 0: this side dials the carrier (the pair's sequencer); 1: it accepts. */
  role: 0 | 1;
}

export interface WrapHostInfo {
  key: KeyPair;
  peers: WrapPeer[];
  /** Where the peer's spookd is (its UDP endpoint; the carrier uses the same TCP port). */
  peerAddr: (peer: string) => { address: string; port: number } | undefined;
  listen: { host: string; port: number };
}

/** Where intercepted connections were going: the BPF hooks, or a stand-in (tests, explicit proxies). */
export interface Interceptor {
  setPorts(ports: number[]): void;
  originalDst(clientPort: number): Target | undefined;
  stats(): Record<string, number>;
  close(): void;
}

export interface WrapSettings {
  intercept: { host: string; port: number };
  interception: 'auto' | 'bpf' | 'off';
  windowBytes: number;
  maxConnections: number;
  silenceMs: number;
}

const CLEAN_CLOSES = new Set([CloseCode.HoldExpired, CloseCode.Shutdown, CloseCode.PeerRestarted, CloseCode.WrapperRemoved, CloseCode.UnknownConnection]);
/** Carrier redial backoff: doubles from the first to the last while dials fail. */
const REDIAL_MS = 250;
const REDIAL_MAX_MS = 5_000;
/** As many as the BPF map of wrapped ports holds (bpf/spook_wrap.c MAX_WRAPPED_PORTS). */
export const MAX_WRAPPERS = 256;
const CLOSE_LINGER_MS = 5_000;

interface LocalConn {
  id: number;
  socket: Socket;
  /** The client side (intercepted here) rather than the server side (dialled here). */
  local: boolean;
  /** Server side: the dial completed (an error before it is a dial failure, not a reset). */
  connected: boolean;
  wrapPort: number;
  /** First bytes of each direction until the protocol is recognised. */
  first: [Buffer[], Buffer[]];
  firstLen: [number, number];
  protocol: Protocol | undefined;
  bytes: [number, number]; // up (client→server), down
}

export interface WrapperCounters extends WrapperSpec {
  connections: number;
  active: number;
  bytesUp: number;
  bytesDown: number;
  outages: number;
  closes: Record<string, number>;
}

interface PeerState {
  peer: WrapPeer;
  session: WrapSession;
  carrier: Carrier | undefined;
  dialing: boolean;
  nextDialAt: number;
  redialMs: number;
  conns: Map<number, LocalConn>;
  lastError: string | undefined;
}

export class WrapManager {
  private readonly peers = new Map<string, PeerState>();
  readonly wrappers = new Map<number, WrapperCounters>();
  readonly protocols = new ProtocolStats();
  private carrierServer: Server | undefined;
  private interceptServers: Server[] = [];
  private hooks: Interceptor | undefined;
  /** Why transparent interception is off, when it is. */
  interceptionError: string | undefined;
  private interceptPort = 0;
  private timer: NodeJS.Timeout | undefined;
  private stopping = false;
  private readonly bootId = randomBytes(8).readBigUInt64BE();
  readonly refused: Record<string, number> = {};
  /** Every local socket still open (lingering ones included), so that stop() leaves none. */
  private readonly sockets = new Set<Socket>();

  constructor(
    private readonly host: WrapHostInfo,
    private readonly settings: WrapSettings,
    initial: WrapperSpec[],
    private readonly log: Logger,
    /** Replaces the BPF hooks (tests): given the intercept listener's port. */
    private readonly interceptor?: (interceptPort: number) => Interceptor,
  ) {
    for (const p of host.peers) {
      const session = new WrapSession({
        ...DEFAULT_WRAP_OPTIONS,
        role: p.role,
        bootId: this.bootId,
        windowBytes: settings.windowBytes,
        maxConnections: settings.maxConnections,
        silenceMs: settings.silenceMs,
        pingMs: Math.max(100, Math.floor(settings.silenceMs / 3)),
      });
      this.peers.set(p.name, { peer: p, session, carrier: undefined, dialing: false, nextDialAt: 0, redialMs: REDIAL_MS, conns: new Map(), lastError: undefined });
    }
    for (const w of initial) this.addState(w);
  }

  private now(): number {
    return performance.now();
  }

  async start(): Promise<void> {
    this.carrierServer = createServer({ allowHalfOpen: false }, (s) => this.onCarrierSocket(s));
    await listen(this.carrierServer, this.host.listen.host, this.host.listen.port, this.log);
    const first = createServer({ allowHalfOpen: true, noDelay: true }, (s) => this.onIntercepted(s));
    await listen(first, this.settings.intercept.host, this.settings.intercept.port, this.log);
    this.interceptServers.push(first);
    this.interceptPort = (first.address() as AddressInfo).port;
    // The hooks send IPv6 clients to [::1] on the same port: listen there too when the host has IPv6.
    if (this.settings.intercept.host === '127.0.0.1') {
      const v6 = createServer({ allowHalfOpen: true, noDelay: true }, (s) => this.onIntercepted(s));
      await listen(v6, '::1', this.interceptPort, this.log).then(
        () => this.interceptServers.push(v6),
        (e: Error) => this.log.info({ error: e.message }, 'no IPv6 intercept listener on [::1]: IPv6 clients of wrapped ports are not carried'),
      );
    }
    // Hooks only once something is wrapped: hosts that use no wrapper never touch the cgroup.
    if (this.wrappers.size > 0) this.openHooks();
    this.log.info({ carrier: `${this.host.listen.host}:${this.host.listen.port}`, intercept: `${this.settings.intercept.host}:${this.interceptPort}`, interception: this.hooks ? 'bpf' : 'off' }, 'wrappers ready');
    this.schedule();
  }

  private openHooks(): void {
    if (this.hooks || this.settings.interception === 'off') return;
    try {
      this.hooks = this.interceptor ? this.interceptor(this.interceptPort) : WrapHooks.open({ proxyPort: this.interceptPort });
      this.hooks.setPorts([...this.wrappers.keys()]);
      this.interceptionError = undefined;
    } catch (e) {
      this.interceptionError = (e as Error).message;
      const msg = 'transparent interception is unavailable (the kernel refused the BPF cgroup hooks): wrapped ports are not intercepted; pairs, domains and carriers still run';
      if (this.settings.interception === 'bpf') throw new Error(`${msg}: ${this.interceptionError}`);
      this.log.warn({ error: this.interceptionError }, msg);
    }
  }

  /** Stop intercepting first (new connections go direct), then close what is carried. */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.timer) clearTimeout(this.timer);
    this.hooks?.close();
    this.hooks = undefined;
    for (const ps of this.peers.values()) {
      ps.session.closeAll(CloseCode.Shutdown, 'spookd is stopping');
      this.flush(ps);
      ps.carrier?.socket.end();
    }
    // A moment for the CLOSE records and the local FINs to leave, then nothing waits on a peer.
    const closed = Promise.all([this.carrierServer, ...this.interceptServers].map((s) => (s ? new Promise<void>((r) => s.close(() => r())) : undefined)));
    await new Promise((r) => setTimeout(r, 300));
    for (const ps of this.peers.values()) ps.carrier?.close('spookd stopped');
    for (const sock of this.sockets) sock.destroy();
    await closed;
  }

  // ---- wrappers (config and admin) ----

  add(spec: WrapperSpec): void {
    if (this.wrappers.has(spec.port)) throw new Error(`port ${spec.port} is already wrapped (to ${this.wrappers.get(spec.port)!.peer}); remove it first`);
    if (!this.peers.has(spec.peer)) throw new Error(`no peer named ${spec.peer}`);
    if (this.wrappers.size >= MAX_WRAPPERS) throw new Error(`at most ${MAX_WRAPPERS} ports can be wrapped`);
    this.addState(spec);
    this.openHooks();
    this.hooks?.setPorts([...this.wrappers.keys()]);
    this.log.info({ ...spec }, 'wrapper added');
  }

  /** Stop intercepting the port; connections already carried end cleanly (wrapper-removed). */
  remove(port: number): void {
    if (!this.wrappers.delete(port)) throw new Error(`port ${port} is not wrapped (wrapped: ${[...this.wrappers.keys()].join(', ') || 'none'})`);
    this.hooks?.setPorts([...this.wrappers.keys()]);
    for (const ps of this.peers.values()) {
      ps.session.closeAll(CloseCode.WrapperRemoved, `the wrapper for port ${port} was removed`, (c) => c.local && c.wrapPort === port);
      this.flush(ps);
    }
    this.log.info({ port }, 'wrapper removed');
  }

  private addState(spec: WrapperSpec): void {
    this.wrappers.set(spec.port, { ...spec, connections: 0, active: 0, bytesUp: 0, bytesDown: 0, outages: 0, closes: {} });
  }

  list(): Record<string, unknown>[] {
    return [...this.wrappers.values()].map((w) => ({ protocol: w.protocol, port: w.port, peer: w.peer, holdMs: w.holdMs, delta: w.delta ?? false, active: w.active, connections: w.connections }));
  }

  stats(): Record<string, unknown> {
    return {
      interception: this.hooks ? 'bpf' : 'off',
      interceptionError: this.interceptionError ?? null,
      intercept: `${this.settings.intercept.host}:${this.interceptPort}`,
      hooks: this.hooks?.stats() ?? null,
      refused: this.refused,
      wrappers: [...this.wrappers.values()].map((w) => ({ ...w })),
      protocols: this.protocols.toJSON(),
      peers: [...this.peers.values()].map((ps) => ({
        peer: ps.peer.name,
        carrier: ps.carrier ? 'up' : ps.dialing ? 'dialing' : 'down',
        carrierBytesOut: ps.carrier?.bytesOut ?? 0,
        carrierBytesIn: ps.carrier?.bytesIn ?? 0,
        lastError: ps.lastError ?? null,
        connections: ps.session.conns.size,
        ...ps.session.counters,
      })),
    };
  }

  connections(): Record<string, unknown>[] {
    const out: Record<string, unknown>[] = [];
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

  private onIntercepted(socket: Socket): void {
    const now = this.now();
    const dst = this.hooks?.originalDst(socket.remotePort ?? 0);
    const refuse = (why: string): void => {
      this.refused[why] = (this.refused[why] ?? 0) + 1;
      this.log.warn({ from: `${socket.remoteAddress}:${socket.remotePort}`, why }, 'intercepted connection refused');
      socket.resetAndDestroy();
    };
    if (!dst) return refuse('no-original-destination');
    const w = this.wrappers.get(dst.port);
    if (!w) return refuse('port-not-wrapped');
    const ps = this.peers.get(w.peer)!;
    const id = ps.session.openLocal(now, w.port, { family: dst.family, address: dst.address, port: dst.port }, w.holdMs, w.delta ?? false);
    if (id === undefined) return refuse('too-many-connections');
    w.connections++;
    w.active++;
    this.attach(ps, id, socket, w.port);
    this.ensureCarrier(ps);
    this.flush(ps);
  }

  // ---- local sockets (both sides) ----

  private attach(ps: PeerState, id: number, socket: Socket, wrapPort: number): LocalConn {
    const local = ps.session.conns.get(id)?.local ?? true;
    const lc: LocalConn = { id, socket, local, connected: local, wrapPort, first: [[], []], firstLen: [0, 0], protocol: undefined, bytes: [0, 0] };
    ps.conns.set(id, lc);
    socket.setNoDelay(true);
    // A socket whose connection ended must never act on a later connection that reuses its id.
    const current = (): boolean => ps.conns.get(id) === lc;
    socket.on('data', (chunk: Buffer) => {
      if (!current()) return void socket.pause();
      this.observe(lc, local ? 0 : 1, chunk);
      if (!ps.session.localData(id, chunk, this.now())) socket.pause();
      this.flush(ps);
    });
    socket.on('end', () => {
      if (!current()) return;
      ps.session.localEnd(id);
      this.flush(ps);
    });
    socket.on('error', (e) => {
      if (!current() || !lc.connected || !ps.session.conns.has(id)) return;
      ps.session.localReset(id, e.message);
      this.finish(ps, lc, local ? 'client-reset' : 'server-reset');
      this.flush(ps);
    });
    this.sockets.add(socket);
    socket.on('close', () => {
      this.sockets.delete(socket);
      if (ps.conns.get(id) === lc && !ps.session.conns.has(id)) ps.conns.delete(id);
    });
    return lc;
  }

  /** Count bytes per direction and recognise the protocol from the first bytes of each. */
  private observe(lc: LocalConn, dir: 0 | 1, chunk: Uint8Array): void {
    lc.bytes[dir] += chunk.length;
    const w = lc.local ? this.wrappers.get(lc.wrapPort) : undefined;
    if (w) {
      if (dir === 0) w.bytesUp += chunk.length;
      else w.bytesDown += chunk.length;
    }
    if (lc.protocol !== undefined) {
      this.protocols.bytes(lc.protocol, dir === 0 ? chunk.length : 0, dir === 1 ? chunk.length : 0);
      return;
    }
    if (lc.firstLen[dir] < RECOGNISE_MAX_BYTES) {
      lc.first[dir].push(Buffer.from(chunk.subarray(0, RECOGNISE_MAX_BYTES - lc.firstLen[dir])));
      lc.firstLen[dir] += Math.min(chunk.length, RECOGNISE_MAX_BYTES - lc.firstLen[dir]);
    }
    const up = Buffer.concat(lc.first[0]);
    const down = Buffer.concat(lc.first[1]);
    const r = recognise(up, down.length ? down : undefined, 'tcp');
    if (r.complete || (up.length >= RECOGNISE_MAX_BYTES && down.length >= RECOGNISE_MAX_BYTES) || lc.bytes[0] + lc.bytes[1] > 4 * RECOGNISE_MAX_BYTES) {
      lc.protocol = r.complete ? r.protocol : 'unknown';
      lc.first = [[], []];
      this.protocols.connection(lc.protocol);
      this.protocols.bytes(lc.protocol, lc.bytes[0], lc.bytes[1]);
    }
  }

  private finish(ps: PeerState, lc: LocalConn, reason: string): void {
    const w = lc.local ? this.wrappers.get(lc.wrapPort) : undefined;
    if (w) {
      w.active = Math.max(0, w.active - 1);
      w.closes[reason] = (w.closes[reason] ?? 0) + 1;
    }
    ps.conns.delete(lc.id);
  }

  // ---- server side ----

  private dial(ps: PeerState, id: number, target: Target, wrapPort: number): void {
    const socket = connect({ host: target.address, port: target.port, family: target.family, allowHalfOpen: true, noDelay: true });
    const lc = this.attach(ps, id, socket, wrapPort);
    socket.once('connect', () => {
      if (ps.conns.get(id) !== lc) return;
      lc.connected = true;
      ps.session.dialed(id);
      this.flush(ps);
    });
    socket.once('error', (e) => {
      if (lc.connected || ps.conns.get(id) !== lc) return;
      ps.session.dialFailed(id, `${target.address}:${target.port}: ${e.message}`);
      ps.conns.delete(lc.id);
      this.flush(ps);
    });
  }

  // ---- the carrier ----

  private ensureCarrier(ps: PeerState): void {
    if (this.stopping || ps.carrier || ps.dialing || ps.peer.role !== 0 || this.now() < ps.nextDialAt) return;
    const addr = this.host.peerAddr(ps.peer.name);
    if (!addr) return;
    ps.dialing = true;
    dialCarrier(addr.address, addr.port, this.host.key, ps.peer.publicKey)
      .then((c) => {
        ps.dialing = false;
        if (this.stopping) return c.close('spookd stopping');
        this.adopt(ps, c);
      })
      .catch((e: Error) => {
        ps.dialing = false;
        ps.lastError = e.message;
        ps.nextDialAt = this.now() + ps.redialMs;
        ps.redialMs = Math.min(REDIAL_MAX_MS, ps.redialMs * 2);
        this.log.debug({ peer: ps.peer.name, error: e.message }, 'carrier dial failed');
        this.schedule();
      });
  }

  private onCarrierSocket(socket: Socket): void {
    acceptCarrier(socket, this.host.key, (key) => [...this.peers.values()].find((p) => Buffer.from(p.peer.publicKey).equals(Buffer.from(key))))
      .then(({ carrier, peer: ps }) => {
        if (this.stopping) return carrier.close('spookd stopping');
        // Adopt only on the first authenticated record: a replayed handshake never displaces a live carrier.
        let adopted = false;
        const giveUp = setTimeout(() => adopted || carrier.close('no record after the handshake'), 5_000);
        carrier.start({
          onRecord: (rec) => {
            if (!adopted) {
              adopted = true;
              clearTimeout(giveUp);
              this.adopt(ps, carrier, true);
            }
            ps.session.handleRecord(this.now(), rec);
            this.flush(ps);
          },
          onClose: () => clearTimeout(giveUp),
          onDrain: () => {},
        });
      })
      .catch((e: Error) => this.log.debug({ from: `${socket.remoteAddress}:${socket.remotePort}`, error: e.message }, 'carrier handshake refused'));
  }

  private adopt(ps: PeerState, c: Carrier, started = false): void {
    const old = ps.carrier;
    ps.carrier = c;
    if (old) {
      ps.session.onCarrierDown(this.now());
      old.close('superseded by a new carrier');
    }
    const handlers = {
      onRecord: (rec: Uint8Array) => {
        ps.session.handleRecord(this.now(), rec);
        this.flush(ps);
      },
      onClose: (why: string) => {
        if (ps.carrier !== c) return;
        ps.carrier = undefined;
        ps.lastError = why;
        ps.session.onCarrierDown(this.now());
        ps.nextDialAt = this.now() + REDIAL_MS;
        this.log.info({ peer: ps.peer.name, why }, 'carrier lost');
        this.flush(ps);
        this.ensureCarrier(ps);
      },
      onDrain: () => this.flush(ps),
    };
    if (started) Object.assign(c, handlers);
    else c.start(handlers);
    ps.session.onCarrierUp(this.now());
    ps.lastError = undefined;
    ps.redialMs = REDIAL_MS;
    this.log.info({ peer: ps.peer.name, remote: `${c.socket.remoteAddress}:${c.socket.remotePort}` }, 'carrier up');
    this.flush(ps);
  }

  // ---- the loop ----

  /** Move records to the carrier while it takes them, then act on the session's events. */
  private flush(ps: PeerState): void {
    const now = this.now();
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
    this.schedule();
  }

  private onEvent(ps: PeerState, ev: WrapEvent): void {
    const lc = 'conn' in ev ? ps.conns.get(ev.conn) : undefined;
    switch (ev.type) {
      case 'dial':
        this.dial(ps, ev.conn, ev.target, ev.wrapPort);
        return;
      case 'deliver': {
        if (!lc) return;
        const n = ev.data.length;
        const session = ps.session;
        this.observe(lc, lc.local ? 1 : 0, ev.data);
        lc.socket.write(ev.data, (err) => {
          if (err || ps.conns.get(ev.conn) !== lc) return;
          session.drained(this.now(), ev.conn, n);
          this.flush(ps);
        });
        return;
      }
      case 'end':
        lc?.socket.end();
        return;
      case 'writable':
        lc?.socket.resume();
        return;
      case 'held': {
        const w = lc?.local ? this.wrappers.get(lc.wrapPort) : undefined;
        if (w) w.outages++;
        if (lc?.protocol) this.protocols.outage(lc.protocol);
        return;
      }
      case 'resumed':
        this.log.info({ peer: ps.peer.name, conn: ev.conn, heldMs: Math.round(ev.heldMs) }, 'wrapped connection resumed');
        return;
      case 'done':
        if (lc) this.finish(ps, lc, 'completed');
        return;
      case 'close': {
        const reason = CLOSE_NAMES[ev.code] ?? `code ${ev.code}`;
        this.log.info({ peer: ps.peer.name, conn: ev.conn, reason, detail: ev.reason, byPeer: ev.byPeer }, 'wrapped connection closed');
        if (!lc) return;
        this.finish(ps, lc, reason);
        if (CLEAN_CLOSES.has(ev.code)) {
          lc.socket.end();
          setTimeout(() => lc.socket.destroy(), CLOSE_LINGER_MS).unref();
        } else lc.socket.resetAndDestroy();
        return;
      }
      case 'drop-carrier':
        this.log.info({ peer: ps.peer.name, reason: ev.reason }, 'dropping the carrier');
        ps.carrier?.close(ev.reason);
        return;
      case 'peer-restarted':
        this.log.warn({ peer: ps.peer.name }, 'the peer spookd restarted: its wrapped connections are gone');
        return;
      case 'violation':
        this.log.warn({ peer: ps.peer.name, detail: ev.detail }, 'wrap protocol violation');
        return;
    }
  }

  private schedule(): void {
    if (this.stopping) return;
    if (this.timer) clearTimeout(this.timer);
    const now = this.now();
    let next = now + 1_000;
    for (const ps of this.peers.values()) {
      const t = ps.session.pollTimeout();
      if (t !== undefined) next = Math.min(next, t);
      if (!ps.carrier && !ps.dialing && ps.peer.role === 0 && this.host.peerAddr(ps.peer.name)) next = Math.min(next, Math.max(ps.nextDialAt, now + 10));
    }
    this.timer = setTimeout(() => this.tick(), Math.max(0, Math.ceil(next - now)));
    this.timer.unref();
  }

  private tick(): void {
    this.timer = undefined;
    const now = this.now();
    for (const ps of this.peers.values()) {
      const t = ps.session.pollTimeout();
      if (t !== undefined && t <= now) ps.session.handleTimeout(now);
      this.ensureCarrier(ps);
      this.flush(ps);
    }
    this.schedule();
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
