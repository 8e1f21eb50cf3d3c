/**
 * The admin API: JSON lines on a Unix socket (mode 0600; never on the network). The commands,
 * their arguments, results and error codes are client/protocol.ts; this file is the framing and
 * the dispatch. Request `{"id":1,"cmd":"pairs","args":{}}` → response `{"id":1,"ok":true,"result":…}`
 * or `{"id":1,"ok":false,"error":{"code":…,"message":…,"field"?:…}}`. `watch` and `events` stream
 * `{"id":1,"peer":…,"event":…}` lines until the client disconnects.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { chmodSync, existsSync, mkdirSync, unlinkSync } from 'node:fs';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import {
  ADMIN_COMMANDS,
  ADMIN_MAX_REQUEST,
  type AdminCommand,
  type AdminErrorBody,
  type AdminEventLine,
  type AdminResponse,
  type AdminStream,
} from '../../client/protocol.js';
import type { Spookd } from '../daemon/spookd.js';
import { domainHandlers } from './domain.js';
import { wrapHandlers } from './wrap.js';
import { pairHandlers, pairStreams } from './pair.js';
import { AdminFault } from './args.js';
import type { Call, Handler, Handlers, StreamHandler, StreamHandlers } from './handlers.js';

export interface AdminRequest {
  id: number;
  cmd: string;
  args?: Record<string, unknown>;
}

/** A largest value in base64 with its key (client/protocol.ts): the daemon holds one such line per client at most. */
const MAX_REQUEST = ADMIN_MAX_REQUEST;
const MAX_CLIENT_BUFFER = 8 * 1024 * 1024;

/** The error of a failed request: a fault's code, or `internal` for anything else the daemon threw. */
function errorBody(e: unknown): AdminErrorBody {
  if (e instanceof AdminFault) return { code: e.code, message: e.message, ...(e.field !== undefined ? { field: e.field } : {}) };
  return { code: 'internal', message: e instanceof Error ? e.message : String(e) };
}

export class AdminServer {
  private server: Server | undefined;
  private readonly clients = new Set<Socket>();
  private readonly handlers: Handlers;
  private readonly streams: StreamHandlers;

  constructor(
    d: Spookd,
    readonly path: string,
    private readonly log: Logger,
  ) {
    this.handlers = { ...pairHandlers(d), ...domainHandlers(d), ...wrapHandlers(d) };
    this.streams = pairStreams(d);
  }

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
    // The line so far, as chunks: a large value's line arrives in many, and joining (or
    // searching) the whole of it on every chunk would be quadratic.
    let parts: string[] = [];
    let held = 0;
    const cleanups: (() => void)[] = [];
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      for (let nl = chunk.indexOf('\n'); nl >= 0; nl = chunk.indexOf('\n')) {
        parts.push(chunk.slice(0, nl));
        const line = parts.join('');
        chunk = chunk.slice(nl + 1);
        parts = [];
        held = 0;
        if (line.length > MAX_REQUEST) return this.refuse(sock);
        if (line.trim()) void this.handle(sock, line, cleanups);
      }
      parts.push(chunk);
      held += chunk.length;
      if (held > MAX_REQUEST) {
        parts = [];
        held = 0;
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
    const error: AdminErrorBody = { code: 'request-too-large', message: `request line over ${MAX_REQUEST} bytes` };
    sock.end(`${JSON.stringify({ id: 0, ok: false, error })}\n`);
    sock.destroy();
  }

  private send(sock: Socket, msg: AdminResponse<unknown> | AdminEventLine): void {
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
      this.send(sock, { id: 0, ok: false, error: { code: 'bad-request', message: `bad request: ${(e as Error).message}` } });
      return;
    }
    const call: Call = { onClose: (f) => cleanups.push(f) };
    const args = req.args ?? {};
    try {
      const cmd = req.cmd;
      if (Object.hasOwn(this.streams, cmd)) {
        const stream = this.streams[cmd as AdminStream] as StreamHandler<AdminStream>;
        stream(args, call, (peer, event) => this.send(sock, { id: req.id, peer, event }));
        this.send(sock, { id: req.id, ok: true, result: 'streaming' });
        return;
      }
      if (!Object.hasOwn(this.handlers, cmd))
        throw new AdminFault('unknown-command', `unknown command ${JSON.stringify(cmd)} (${ADMIN_COMMANDS.join(', ')})`);
      const handler = this.handlers[cmd as AdminCommand] as Handler<AdminCommand>;
      this.send(sock, { id: req.id, ok: true, result: await handler(args, call) });
    } catch (e) {
      this.send(sock, { id: req.id, ok: false, error: errorBody(e) });
    }
  }
}
