/**
 * The admin API: JSON lines on a Unix socket (mode 0600; never on the network).
 * Request `{"id":1,"cmd":"pairs","args":{}}` → response `{"id":1,"ok":true,"result":…}` or
 * `{"id":1,"ok":false,"error":"…"}`. `watch` and `events` stream `{"id":1,"event":…}` lines
 * until the client disconnects.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { chmodSync, existsSync, mkdirSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import { DeltaOp, type Delta } from '../../wire/delta.js';
import { verdictByte } from '../../wire/messages.js';
import { hashHex } from '../../core/register/hash.js';
import { ProposeError } from '../../core/pair/replica.js';
import type { SpookEvent } from '../../core/pair/events.js';
import { MapState } from '../../core/register/map.js';
import { type StreamState } from '../../core/register/stream.js';
import { encodeKey } from '../daemon/keys.js';
import type { PeerLink, Spookd } from '../daemon/spookd.js';
import { DOMAIN_COMMANDS, runDomainCommand } from './domain.js';
import { WRAP_COMMANDS, runWrapCommand } from './wrap.js';
import { MAX_WAIT_MS, bytesArg, num, showBytes, str } from './args.js';

export interface AdminRequest {
  id: number;
  cmd: string;
  args?: Record<string, unknown>;
}

const MAX_REQUEST = 64 * 1024;
const MAX_CLIENT_BUFFER = 8 * 1024 * 1024;
export function pairSummary(d: Spookd, link: PeerLink): Record<string, unknown> {
  const p = link.pair;
  const st = p.stats;
  return {
    peer: link.name,
    publicKey: encodeKey(link.publicKey),
    state: p.state,
    since: Math.round(p.since),
    role: p.role,
    endpoint: link.addr ? `${link.addr.address}:${link.addr.port}` : null,
    pairId: link.session?.localIndex ?? null,
    rttMs: p.rttMs === undefined ? null : Number(p.rttMs.toFixed(2)),
    loss: st.datagramsSent === 0 ? 0 : Number((st.retransmitTimeouts / st.datagramsSent).toFixed(4)),
    bytesSent: st.bytesSent,
    bytesReceived: st.bytesReceived,
    datagramsSent: st.datagramsSent,
    datagramsReceived: st.datagramsReceived,
    reentanglements: st.reentanglements,
    fullTransfers: st.fullTransfers,
    reentangleBytes: st.reentangleBytes,
    drops: st.drops,
    disconnects: link.disconnects,
    fenced: link.fenced ?? null,
    overBudget: link.budget.refused,
    registers: [...p.registers.values()].map((r) => ({
      name: r.name,
      kind: r.cfg.kind,
      policy: r.cfg.policy,
      version: r.version,
      hash: hashHex(r.hash),
      size: r.state.size(),
      stateBytes: r.state.fullTransferBytes(),
      pending: r.pendingCount,
      peerVersion: r.peerVersion,
      logBase: r.log.base,
    })),
  };
  void d;
}

export class AdminServer {
  private server: Server | undefined;
  private readonly clients = new Set<Socket>();

  constructor(
    private readonly d: Spookd,
    readonly path: string,
    private readonly log: Logger,
  ) {}

  async start(): Promise<void> {
    mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
    if (existsSync(this.path)) unlinkSync(this.path); // a stale socket from a crashed daemon
    const server = createServer((sock) => this.onClient(sock));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.path, () => resolve());
    });
    chmodSync(this.path, 0o600);
    this.server = server;
    this.log.info({ adminSocket: this.path }, 'admin API listening');
  }

  async stop(): Promise<void> {
    for (const c of this.clients) c.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    if (existsSync(this.path)) unlinkSync(this.path);
  }

  private onClient(sock: Socket): void {
    this.clients.add(sock);
    let buf = '';
    const cleanups: (() => void)[] = [];
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      buf += chunk;
      for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        if (line.length > MAX_REQUEST) return this.refuse(sock);
        if (line.trim()) void this.handle(sock, line, cleanups);
      }
      if (buf.length > MAX_REQUEST) {
        buf = '';
        this.refuse(sock);
      }
    });
    const done = (): void => {
      this.clients.delete(sock);
      for (const c of cleanups) c();
    };
    sock.on('close', done);
    sock.on('error', done);
  }

  private refuse(sock: Socket): void {
    sock.end(`${JSON.stringify({ id: 0, ok: false, error: `request line over ${MAX_REQUEST} bytes` })}\n`);
    sock.destroy();
  }

  private send(sock: Socket, msg: unknown): void {
    if (sock.destroyed) return;
    // A client that stops reading a stream must not make the daemon buffer without bound.
    if (sock.writableLength > MAX_CLIENT_BUFFER) {
      this.log.warn({ buffered: sock.writableLength }, 'admin client not reading; disconnected');
      sock.destroy();
      return;
    }
    sock.write(`${JSON.stringify(msg)}\n`);
  }

  private async handle(sock: Socket, line: string, cleanups: (() => void)[]): Promise<void> {
    let req: AdminRequest;
    try {
      req = JSON.parse(line) as AdminRequest;
      if (typeof req.id !== 'number' || typeof req.cmd !== 'string') throw new Error('need numeric id and string cmd');
    } catch (e) {
      this.send(sock, { id: 0, ok: false, error: `bad request: ${(e as Error).message}` });
      return;
    }
    try {
      const result = await this.run(req, sock, cleanups);
      if (result !== STREAMING) this.send(sock, { id: req.id, ok: true, result });
    } catch (e) {
      this.send(sock, { id: req.id, ok: false, error: (e as Error).message });
    }
  }

  private async run(req: AdminRequest, sock: Socket, cleanups: (() => void)[]): Promise<unknown> {
    const d = this.d;
    const args = req.args ?? {};
    switch (req.cmd) {
      case 'status':
        return {
          publicKey: encodeKey(d.key.publicKey),
          listen: d.cfg.listen,
          uptimeMs: Math.round(d.uptimeMs),
          pid: process.pid,
          xdp: d.fastPath.status().enabled ? `${d.fastPath.status().mode} on ${d.fastPath.status().interface}` : 'off',
          pairs: [...d.links.values()].map((l) => ({ peer: l.name, state: l.pair.state })),
          drops: d.drops,
          warningsSuppressed: d.warns.suppressed,
        };
      case 'pairs':
        return [...d.links.values()].map((l) => pairSummary(d, l));
      case 'xdp':
        return d.fastPath.status();
      case 'pair':
        return pairSummary(d, d.link(str(args, 'peer', false)));
      case 'registers':
        return [...d.links.values()].flatMap((l) => (pairSummary(d, l).registers as object[]).map((r) => ({ peer: l.name, ...r })));
      case 'get': {
        const link = d.link(str(args, 'peer', false));
        const r = link.pair.register(str(args, 'register')!);
        if (r.state instanceof MapState) {
          const e = r.state.get(Buffer.from(str(args, 'key')!, 'utf8'));
          return { register: r.name, version: r.version, found: !!e, ...(e ? { keyVersion: e.version, value: showBytes(e.value) } : {}) };
        }
        const offset = num(args, 'offset', 0, 0, Number.MAX_SAFE_INTEGER);
        const length = num(args, 'length', 65536, 0, 1 << 20);
        return {
          register: r.name,
          version: r.version,
          size: r.state.size(),
          offset,
          data: showBytes((r.state as StreamState).read(offset, length)),
        };
      }
      case 'set':
      case 'del':
      case 'cas':
      case 'append':
        return this.propose(req.cmd, args, cleanups);
      case 'watch':
      case 'events': {
        const peer = str(args, 'peer', false);
        const register = str(args, 'register', false);
        const sub = (link: PeerLink, ev: SpookEvent): void => {
          if (peer && link.name !== peer) return;
          if (req.cmd === 'watch' && (ev.type !== 'collapse' || (register && ev.register !== register))) return;
          if (req.cmd === 'events' && ev.type !== 'lifecycle' && ev.type !== 'reentangled') return;
          const out =
            ev.type === 'collapse'
              ? { ...ev, entries: ev.entries.map((e) => ({ origin: e.origin, seq: e.seq, verdict: verdictByte(e) })) }
              : ev;
          this.send(sock, { id: req.id, peer: link.name, event: out });
        };
        d.subscribers.add(sub);
        cleanups.push(() => d.subscribers.delete(sub));
        this.send(sock, { id: req.id, ok: true, result: 'streaming' });
        return STREAMING;
      }
      default:
        if (DOMAIN_COMMANDS.includes(req.cmd)) return runDomainCommand(d, req.cmd, args, cleanups);
        if (WRAP_COMMANDS.includes(req.cmd)) return runWrapCommand(d, req.cmd, args);
        throw new Error(
          `unknown command ${JSON.stringify(req.cmd)} (status, pairs, pair, registers, xdp, get, set, cas, del, append, watch, events, ${[...DOMAIN_COMMANDS, ...WRAP_COMMANDS].join(', ')})`,
        );
    }
  }

  /** Propose and wait for the outcome (committed or rejected) of this candidate. */
  private propose(cmd: string, args: Record<string, unknown>, cleanups: (() => void)[]): Promise<unknown> {
    const d = this.d;
    const link = d.link(str(args, 'peer', false));
    const register = str(args, 'register')!;
    const r = link.pair.register(register);
    const enc = (k: string): Uint8Array => bytesArg(args, k);
    let delta: Delta;
    if (cmd === 'set') delta = { op: DeltaOp.Set, key: enc('key'), value: enc('value') };
    else if (cmd === 'del') delta = { op: DeltaOp.Del, key: enc('key') };
    else if (cmd === 'cas')
      delta = { op: DeltaOp.Cas, key: enc('key'), expect: num(args, 'expect', 0, 0, Number.MAX_SAFE_INTEGER), value: enc('value') };
    else delta = { op: DeltaOp.Append, offset: num(args, 'offset', r.nextAppendOffset, 0, Number.MAX_SAFE_INTEGER), data: enc('data') };
    const timeoutMs = num(args, 'timeoutMs', 10_000, 0, MAX_WAIT_MS);
    let id: { origin: number; seq: number };
    try {
      id = link.pair.propose(d.now(), register, delta);
    } catch (e) {
      if (e instanceof ProposeError) throw new Error(`${e.code}: ${e.message}`);
      throw e;
    }
    return new Promise((resolve) => {
      const done = (): void => {
        d.subscribers.delete(sub);
        clearTimeout(timer);
      };
      const sub = (l: PeerLink, ev: SpookEvent): void => {
        if (l !== link || ev.type !== 'outcome' || ev.register !== register || ev.origin !== id.origin || ev.seq !== id.seq) return;
        done();
        resolve({
          register,
          origin: id.origin,
          seq: id.seq,
          verdict: ev.verdict,
          reason: ev.verdict === 'rejected' ? ev.reason : null,
          version: ev.version,
        });
      };
      const timer = setTimeout(() => {
        done();
        // Not an error: the candidate stays pending (buffered) and will still be decided.
        resolve({
          register,
          origin: id.origin,
          seq: id.seq,
          verdict: 'pending',
          reason: `no outcome within ${timeoutMs} ms (pair ${link.pair.state})`,
          version: null,
        });
      }, timeoutMs);
      d.subscribers.add(sub);
      cleanups.push(done); // the client went away: stop waiting for it
      d.kick(link);
    });
  }
}

const STREAMING = Symbol('streaming');
