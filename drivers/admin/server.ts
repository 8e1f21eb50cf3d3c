/**
 * The admin API: JSON lines on a Unix socket (mode 0600, or 0660 for `adminGroup`: access.ts; never on the network). The commands,
 * their arguments, results and error codes are client/protocol.ts; this file is the framing and
 * the dispatch. Request `{"id":1,"cmd":"pairs","args":{}}` → response `{"id":1,"ok":true,"result":…}`
 * or `{"id":1,"ok":false,"error":{"code":…,"message":…,"field"?:…}}`. `watch` and `events` stream
 * `{"id":1,"peer":…,"event":…}` lines until the client disconnects.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { existsSync, unlinkSync } from 'node:fs';
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
import { txnHandlers } from './txn.js';
import { pairHandlers, pairStreams } from './pair.js';
import { readHandlers, readStreams } from './read.js';
import { AdminFault } from './args.js';
import { adminSocketMode, applySocketAccess, prepareSocketDir, resolveAdminGroup } from './access.js';
import type { Call, Handler, Handlers, StreamHandler, StreamHandlers } from './handlers.js';

export interface AdminRequest {
  id: number;
  cmd: string;
  args?: Record<string, unknown>;
}

/** A largest value in base64 with its key (client/protocol.ts): the daemon holds one such line per client at most. */
const MAX_REQUEST = ADMIN_MAX_REQUEST;
/** Unfinished request lines of all connections together: a few largest values at once, not one per connection. */
const MAX_HELD_TOTAL = 4 * MAX_REQUEST;
const MAX_CLIENT_BUFFER = 8 * 1024 * 1024;
/** Requests one connection may have awaiting their answer (a library keeps 256 writes in flight); more are refused. */
export const MAX_REQUESTS_IN_PROGRESS = 4096;

/** What the server keeps per client connection. */
interface Connection {
  /** Run when the connection ends: in-progress requests' and streams' (answered requests remove theirs). */
  cleanups: Set<() => void>;
  /** Commands awaiting their answer. */
  inProgress: number;
}

/** The error of a failed request: a fault's code, or `internal` for anything else the daemon threw. */
function errorBody(e: unknown): AdminErrorBody {
  if (e instanceof AdminFault) return { code: e.code, message: e.message, ...(e.field !== undefined ? { field: e.field } : {}) };
  return { code: 'internal', message: e instanceof Error ? e.message : String(e) };
}

/** Set the umask to 0177 and return the previous one, or undefined where it cannot be set (a worker thread). */
function restrictUmask(): number | undefined {
  try {
    return process.umask(0o177);
  } catch {
    return undefined;
  }
}

export class AdminServer {
  private server: Server | undefined;
  private readonly clients = new Map<Socket, Connection>();
  /** Characters of unfinished request lines held for every connection together (MAX_HELD_TOTAL). */
  private heldTotal = 0;
  private readonly handlers: Handlers;
  private readonly streams: StreamHandlers;
  /** Who may connect besides root (config adminGroup, adminMode). */
  private readonly access: { adminGroup?: string | number; adminMode?: number };

  constructor(
    d: Spookd,
    readonly path: string,
    private readonly log: Logger,
  ) {
    this.access = { adminGroup: d.cfg.adminGroup, adminMode: d.cfg.adminMode };
    this.handlers = { ...pairHandlers(d), ...domainHandlers(d), ...wrapHandlers(d), ...readHandlers(d), ...txnHandlers(d) };
    this.streams = { ...pairStreams(d), ...readStreams(d) };
  }

  /** Per client connection: requests awaiting their answer, and callbacks held for its end (a test checks answered ones hold none). */
  get connections(): { inProgress: number; held: number }[] {
    return [...this.clients.values()].map((c) => ({ inProgress: c.inProgress, held: c.cleanups.size }));
  }

  /** The commands and streams this server answers (a test checks them against ADMIN_COMMANDS). */
  get commands(): { commands: string[]; streams: string[] } {
    return { commands: Object.keys(this.handlers), streams: Object.keys(this.streams) };
  }

  async start(): Promise<void> {
    const group = this.access.adminGroup;
    const gid = group === undefined ? undefined : resolveAdminGroup(group);
    const mode = adminSocketMode(this.access);
    prepareSocketDir(this.path, gid, group);
    if (existsSync(this.path)) unlinkSync(this.path); // a stale socket from a crashed daemon
    const server = createServer((sock) => this.onClient(sock));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // The socket is bound inside listen(): created 0600 whatever the umask, so no one else can
      // connect before its group and mode are set. (Worker threads, as in tests, cannot set the
      // umask; there the process's own umask applies for that instant.)
      const umask = restrictUmask();
      try {
        server.listen(this.path, () => resolve());
      } finally {
        if (umask !== undefined) process.umask(umask);
      }
    });
    try {
      applySocketAccess(this.path, mode, gid, group);
    } catch (e) {
      server.close();
      throw e;
    }
    this.server = server;
    this.log.info({ adminSocket: this.path, mode: `0${mode.toString(8)}`, group: group ?? null, gid: gid ?? null }, 'admin API listening');
  }

  async stop(): Promise<void> {
    for (const c of this.clients.keys()) c.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    if (existsSync(this.path)) unlinkSync(this.path);
  }

  private onClient(sock: Socket): void {
    const conn: Connection = { cleanups: new Set(), inProgress: 0 };
    this.clients.set(sock, conn);
    const drains = new Set<() => void>();
    sock.on('drain', () => {
      for (const f of drains) f();
    });
    // The line so far, as chunks: a large value's line arrives in many, and joining (or
    // searching) the whole of it on every chunk would be quadratic.
    let parts: string[] = [];
    let held = 0;
    const release = (): void => {
      this.heldTotal -= held;
      parts = [];
      held = 0;
    };
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      for (let nl = chunk.indexOf('\n'); nl >= 0; nl = chunk.indexOf('\n')) {
        parts.push(chunk.slice(0, nl));
        const line = parts.join('');
        chunk = chunk.slice(nl + 1);
        release();
        if (line.length > MAX_REQUEST) return this.refuse(sock);
        if (line.trim()) void this.handle(sock, line, conn, drains);
      }
      parts.push(chunk);
      held += chunk.length;
      this.heldTotal += chunk.length;
      // One line may be as long as a largest value; all connections' partial lines together have a budget too.
      if (held > MAX_REQUEST || this.heldTotal > MAX_HELD_TOTAL) {
        release();
        this.refuse(sock);
      }
    });
    const done = (): void => {
      release();
      this.clients.delete(sock);
      for (const c of conn.cleanups) c();
      conn.cleanups.clear();
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

  private async handle(sock: Socket, line: string, conn: Connection, drains: Set<() => void>): Promise<void> {
    let req: AdminRequest;
    try {
      req = JSON.parse(line) as AdminRequest;
      if (typeof req.id !== 'number' || typeof req.cmd !== 'string') throw new Error('need numeric id and string cmd');
    } catch (e) {
      this.send(sock, { id: 0, ok: false, error: { code: 'bad-request', message: `bad request: ${(e as Error).message}` } });
      return;
    }
    if (conn.inProgress >= MAX_REQUESTS_IN_PROGRESS) {
      const message = `${MAX_REQUESTS_IN_PROGRESS} requests of this connection await their answer already; wait for some`;
      this.send(sock, { id: req.id, ok: false, error: { code: 'too-many-requests', message } });
      return;
    }
    // What this request registered to run at the connection's end; dropped once it is answered (streams keep theirs).
    const mine: (() => void)[] = [];
    const call: Call = {
      onClose: (f) => {
        mine.push(f);
        conn.cleanups.add(f);
      },
      onConnectionClose: (f) => void conn.cleanups.add(f),
      conn: sock,
      backlog: () => sock.writableLength,
      onDrain: (f) => {
        drains.add(f);
        return () => drains.delete(f);
      },
    };
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
      conn.inProgress++;
      try {
        this.send(sock, { id: req.id, ok: true, result: await handler(args, call) });
      } finally {
        conn.inProgress--;
        for (const f of mine) conn.cleanups.delete(f);
      }
    } catch (e) {
      this.send(sock, { id: req.id, ok: false, error: errorBody(e) });
    }
  }
}
