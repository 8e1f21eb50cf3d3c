/**
 * The admin API: JSON lines on a Unix socket (mode 0600, or 0660 for `adminGroup`: access.ts; never on the network). The commands,
 * their arguments, results and error codes are client/protocol.ts; this file is the framing and
 * the dispatch. Request `{"id":1,"cmd":"pairs","args":{}}` → response `{"id":1,"ok":true,"result":…}`
 * or `{"id":1,"ok":false,"error":{"code":…,"message":…,"field"?:…}}`. Streams (`watch`, `events`, `feed`,
 * `dfeed`) send `{"id":1,"peer":…,"event":…}` lines until the client disconnects, or until spookd ends
 * one with an error line of its id (`peer-removed`: what it was bound to was removed by a reload).
 */
import { createServer, type Server, type Socket } from 'node:net';
import { existsSync, unlinkSync } from 'node:fs';
import type { Logger } from 'pino';
import {
  ADMIN_COMMANDS,
  ADMIN_MAX_REQUEST,
  type AdminCommand,
  type AdminErrorBody,
  type AdminErrorCode,
  type AdminEventLine,
  type AdminResponse,
  type AdminStream,
} from '../../client/protocol.js';
import type { Spookd } from '../daemon/spookd.js';
import { domainHandlers } from './domain.js';
import { wrapHandlers } from './wrap.js';
import { txnHandlers } from './txn.js';
import { reloadHandlers } from './reload.js';
import { pairHandlers, pairStreams } from './pair.js';
import { readHandlers, readStreams } from './read.js';
import { ADMIN_ARGUMENTS, AdminFault, ECHO_MAX, clip, echo, unknownArgument } from './args.js';
import { adminSocketMode, applySocketAccess, prepareSocketDir, refuseOpenSocketDir, resolveAdminGroup } from './access.js';
import type { Call, Handler, Handlers, StreamHandler, StreamHandlers } from './handlers.js';

export interface AdminRequest {
  id: number;
  cmd: string;
  args?: Record<string, unknown>;
}

/** The admin server's bounds; a test lowers them on one server (`AdminServer.limits`). */
export const ADMIN_LIMITS = {
  /** Longest request line (characters): a largest value in base64 with its key (client/protocol.ts). */
  maxRequest: ADMIN_MAX_REQUEST,
  /**
   * Unfinished request lines of all connections together: a few largest values at once, not one per
   * connection. Past it, the connection whose unfinished line is oldest is refused (`too-busy`), not whichever
   * connection's chunk arrived last: a client that stalls large lines cannot get others' writes refused.
   */
  maxHeldTotal: 4 * ADMIN_MAX_REQUEST,
  /** Admin connections open at once; more are answered `too-busy` and closed. */
  maxConnections: 1024,
  /**
   * Characters of the request lines of one connection whose command awaits its answer (parsed, not
   * answered: a write waiting for its outcome). Past it, a request is answered `too-many-requests`;
   * two largest requests fit, so one always does beside smaller ones.
   */
  maxInProgressChars: 2 * ADMIN_MAX_REQUEST,
  /** The same, of all connections together: a few largest requests at once, as maxHeldTotal. */
  maxInProgressTotal: 4 * ADMIN_MAX_REQUEST,
  /**
   * Answers and stream lines written and not yet read, of all connections together (each is also cut
   * at MAX_CLIENT_BUFFER). Per connection alone, 1,024 connections that never read held 8 GiB of
   * strings in a heap of 4 GiB: spookd ended out of memory. Past it (found within an eighth
   * more: unreadCheckAt), the connections behind longest are dropped until it holds again.
   */
  maxUnreadTotal: 256 * 1024 * 1024,
};
const MAX_CLIENT_BUFFER = 8 * 1024 * 1024;
/**
 * Refused connections kept open, ended, so that the client reads why (refuseWith): at most this many at once, for at
 * most LINGER_MS; past that, closed at once as before.
 */
const MAX_LINGERING = 64;
const LINGER_MS = 1_000;
/** Requests one connection may have awaiting their answer (a library keeps 256 writes in flight); more are refused. */
export const MAX_REQUESTS_IN_PROGRESS = 4096;

/** What the server keeps per client connection. */
interface Connection {
  /** Run when the connection ends: in-progress requests' and streams' (answered requests remove theirs). */
  cleanups: Set<() => void>;
  /** Commands awaiting their answer. */
  inProgress: number;
  /** Characters of their request lines (limits.maxInProgressChars). */
  inProgressChars: number;
  /** The connection has ended: its requests' characters left the total then (an answer that comes later releases none). */
  ended: boolean;
  /** Characters of the unfinished request line held for it. */
  held: number;
  /** When that line began (its first chunk), for choosing who gives way. */
  lineStartedAt: number;
  /** Ends it with one error line (request-too-large, too-busy). */
  refuse: (code: AdminErrorCode, message: string) => void;
  /** Its socket's unread backlog when last looked at (counted in AdminServer.unreadTotal). */
  unread: number;
  /** Since when its backlog passed the socket's high-water mark without draining (undefined: not behind). */
  behindSince: number | undefined;
  /** Octets of answers written to its socket in all. */
  written: number;
  /**
   * When its answers were written, oldest first: `written` at the end of each, and the instant (coalesced per
   * UNREAD_MARK_MS, at most UNREAD_MARKS, the oldest kept): the age of its oldest octet not read yet.
   */
  marks: { end: number; at: number }[];
}

/** Answers written within this many ms share one mark of their age (Connection.marks). */
const UNREAD_MARK_MS = 10;
/** Marks kept per connection: past this many, the two oldest merge (under the older instant: it only looks older). */
const UNREAD_MARKS = 64;

/**
 * The longest error message sent (characters): what a client sent is quoted shortened (echo), and
 * this bounds any message all the same (one that lists what is configured, one the daemon threw).
 */
export const MAX_ERROR_MESSAGE = 4096;

/** The error of a failed request: a fault's code, or `internal` for anything else the daemon threw; its message and field bounded. */
function errorBody(e: unknown): AdminErrorBody {
  const message = clip(e instanceof Error ? e.message : String(e), MAX_ERROR_MESSAGE);
  if (e instanceof AdminFault) return { code: e.code, message, ...(e.field !== undefined ? { field: clip(e.field, 2 * ECHO_MAX) } : {}) };
  return { code: 'internal', message };
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
  readonly limits = { ...ADMIN_LIMITS };
  /** Characters of unfinished request lines held for every connection together (limits.maxHeldTotal). */
  private heldTotal = 0;
  /** Characters of the request lines awaiting their answer, of every connection together (limits.maxInProgressTotal). */
  private inProgressTotal = 0;
  /**
   * Bytes written to clients and not read, as last looked at per connection (limits.maxUnreadTotal):
   * at least the true total (a backlog only shrinks between looks), counted afresh before anyone is dropped.
   */
  private unreadTotal = 0;
  /**
   * The count past which they are counted afresh (shedUnread): maxUnreadTotal, or an eighth of it above
   * what the last count found, so that a total held just under the limit does not make every answer
   * count all connections (a count is O(connections) and comes once per eighth of the limit written).
   */
  private unreadCheckAt = ADMIN_LIMITS.maxUnreadTotal;
  /** Refused connections ended and not yet closed (refuseWith). */
  private readonly lingering = new Set<Socket>();
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
    this.handlers = {
      ...pairHandlers(d),
      ...domainHandlers(d),
      ...wrapHandlers(d),
      ...readHandlers(d),
      ...txnHandlers(d),
      ...reloadHandlers(d),
    };
    this.streams = { ...pairStreams(d), ...readStreams(d) };
  }

  /** Per client connection: requests awaiting their answer, and callbacks held for its end (a test checks answered ones hold none). */
  get connections(): { inProgress: number; cleanups: number; lineChars: number; inProgressChars: number }[] {
    return [...this.clients.values()].map((c) => ({
      inProgress: c.inProgress,
      cleanups: c.cleanups.size,
      lineChars: c.held,
      inProgressChars: c.inProgressChars,
    }));
  }

  /** Characters of the request lines of every connection whose command awaits its answer (limits.maxInProgressTotal). */
  get inProgressChars(): number {
    return this.inProgressTotal;
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
    refuseOpenSocketDir(this.path);
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
    for (const c of this.lingering) c.destroy();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    if (existsSync(this.path)) unlinkSync(this.path);
  }

  private onClient(sock: Socket): void {
    const { maxRequest, maxHeldTotal, maxConnections } = this.limits;
    if (this.clients.size >= maxConnections) {
      this.refuseWith(sock, 'too-busy', `spookd has ${maxConnections} admin connections open; close some`);
      return;
    }
    // The line so far, as chunks: a large value's line arrives in many, and joining (or
    // searching) the whole of it on every chunk would be quadratic.
    let parts: string[] = [];
    const release = (): void => {
      this.heldTotal -= conn.held;
      parts = [];
      conn.held = 0;
    };
    const conn: Connection = {
      cleanups: new Set(),
      inProgress: 0,
      inProgressChars: 0,
      ended: false,
      held: 0,
      lineStartedAt: 0,
      unread: 0,
      behindSince: undefined,
      written: 0,
      marks: [],
      refuse: (code, message) => {
        release();
        this.refuseWith(sock, code, message);
      },
    };
    this.clients.set(sock, conn);
    const drains = new Set<() => void>();
    sock.on('drain', () => {
      conn.behindSince = undefined;
      this.noteUnread(conn, sock);
      for (const f of drains) f();
    });
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      if (sock.destroyed || sock.writableEnded) return; // refused: what follows is not read

      for (let nl = chunk.indexOf('\n'); nl >= 0; nl = chunk.indexOf('\n')) {
        parts.push(chunk.slice(0, nl));
        const line = parts.join('');
        chunk = chunk.slice(nl + 1);
        release();
        if (line.length > maxRequest) return conn.refuse('request-too-large', `request line over ${maxRequest} characters`);
        if (line.trim()) this.handle(sock, line, conn, drains);
      }
      if (conn.held === 0 && chunk.length > 0) conn.lineStartedAt = performance.now();
      parts.push(chunk);
      conn.held += chunk.length;
      this.heldTotal += chunk.length;
      if (conn.held > maxRequest) return conn.refuse('request-too-large', `request line over ${maxRequest} characters`);
      while (this.heldTotal > maxHeldTotal) this.refuseOldest();
    });
    const done = (): void => {
      release();
      this.unreadTotal -= conn.unread;
      conn.unread = 0;
      // Its requests still awaiting an answer may never get one (a write stops waiting with its client): released now.
      if (!conn.ended) this.inProgressTotal -= conn.inProgressChars;
      conn.ended = true;
      conn.inProgressChars = 0;
      this.clients.delete(sock);
      for (const c of conn.cleanups) c();
      conn.cleanups.clear();
    };
    sock.on('close', done);
    sock.on('error', done);
  }

  /**
   * Ends `sock` with one error line of id 0. Destroyed at once, a client still writing its request failed
   * (EPIPE) before it read the line, and could only tell "connection closed" (its library: spookd stopped,
   * not `too-busy`). Ended, it reads the line, then the end. Up to MAX_LINGERING refused connections
   * are kept at once, each a second at most, what they send discarded; past that they are closed at once.
   */
  private refuseWith(sock: Socket, code: AdminErrorCode, message: string): void {
    sock.end(`${JSON.stringify({ id: 0, ok: false, error: { code, message } })}\n`);
    if (this.lingering.size >= MAX_LINGERING) {
      sock.destroy();
      return;
    }
    this.lingering.add(sock);
    sock.on('error', () => {});
    sock.resume();
    const timer = setTimeout(() => sock.destroy(), LINGER_MS);
    timer.unref();
    sock.once('close', () => {
      this.lingering.delete(sock);
      clearTimeout(timer);
    });
  }

  /**
   * The shared budget of unfinished lines is spent: the connection whose line began earliest gives
   * way (the largest, between lines begun together). An honest line arrives at the socket's speed;
   * a stalled one only grows old, so age, not size, finds the client that holds the budget (review).
   */
  private refuseOldest(): void {
    let hog: Connection | undefined;
    for (const c of this.clients.values())
      if (
        c.held > 0 &&
        (hog === undefined || c.lineStartedAt < hog.lineStartedAt || (c.lineStartedAt === hog.lineStartedAt && c.held > hog.held))
      )
        hog = c;
    if (!hog) {
      this.heldTotal = 0; // nothing is held: the count drifted; it cannot stay above the budget
      return;
    }
    const total = this.limits.maxHeldTotal;
    hog.refuse('too-busy', `spookd holds ${total} characters of unfinished requests; this connection's line is the oldest (${hog.held})`);
  }

  private send(sock: Socket, msg: AdminResponse<unknown> | AdminEventLine): void {
    if (sock.destroyed || sock.writableEnded) return; // closed, or refused (refuseWith): nothing more is written
    // A client that stops reading a stream must not make the daemon buffer without bound.
    if (sock.writableLength > MAX_CLIENT_BUFFER) {
      this.log.warn({ buffered: sock.writableLength }, 'admin client not reading; disconnected');
      sock.destroy();
      return;
    }
    // Answers of one turn (a domain's flush decides hundreds of candidates at once) leave in
    // one write to the socket, not one each.
    if (!sock.writableCorked) {
      sock.cork();
      process.nextTick(() => sock.uncork());
    }
    const conn = this.clients.get(sock);
    // What it read since the last look is seen before this answer adds to its backlog (noteUnread).
    if (conn) this.noteUnread(conn, sock);
    const text = `${JSON.stringify(msg)}\n`;
    const below = sock.write(text);
    if (!conn) return;
    const at = performance.now();
    conn.written += Buffer.byteLength(text);
    const last = conn.marks[conn.marks.length - 1];
    if (last && at - last.at < UNREAD_MARK_MS) last.end = conn.written;
    else conn.marks.push({ end: conn.written, at });
    if (conn.marks.length > UNREAD_MARKS) conn.marks.splice(0, 2, { end: conn.marks[1].end, at: conn.marks[0].at });
    if (!below) conn.behindSince ??= at;
    this.noteUnread(conn, sock);
    if (this.unreadTotal > Math.min(this.unreadCheckAt, this.limits.maxUnreadTotal + (this.limits.maxUnreadTotal >>> 3))) this.shedUnread();
  }

  /** Count the backlog of `sock` as it is now; the marks of the answers read whole since go. */
  private noteUnread(conn: Connection, sock: Socket): void {
    const now = sock.destroyed ? 0 : sock.writableLength;
    this.unreadTotal += now - conn.unread;
    conn.unread = now;
    const read = conn.written - now;
    let gone = 0;
    while (gone < conn.marks.length && conn.marks[gone].end <= read) gone++;
    if (gone > 0) conn.marks.splice(0, gone);
  }

  /**
   * How long `conn` has been behind: since its oldest octet not read yet was written. 'drain' comes only once
   * the backlog is empty, which a client that reads steadily behind a stream or pipelined requests may never
   * reach: kept from its first large answer, it was shed before a client that stopped reading later. Restarted
   * whenever its backlog shrank instead, a client reading a trickle and topping it up held megabytes for ever,
   * and any client whose answers were a moment old went before it.
   */
  private behindAt(conn: Connection): number {
    if (conn.behindSince === undefined) return Infinity;
    return conn.marks.length > 0 ? conn.marks[0].at : conn.behindSince;
  }

  /**
   * Answers not read may pass maxUnreadTotal in all: the backlogs are counted afresh, and while over,
   * the connection behind for longest is dropped (the largest, between those behind since the same
   * instant). A client that reads drains within moments of each large answer, or at least reads its oldest
   * octets soon after they were written (behindAt); one that stopped reading, or reads a trickle, only grows
   * old, so age, not size, finds it (a scan page is ~10 MiB to an honest client too).
   */
  private shedUnread(): void {
    for (const [s, c] of this.clients) this.noteUnread(c, s);
    while (this.unreadTotal > this.limits.maxUnreadTotal) {
      let hog: [Socket, Connection] | undefined;
      for (const e of this.clients) {
        const c = e[1];
        if (c.unread === 0) continue;
        const at = this.behindAt(c);
        const hogAt = hog ? this.behindAt(hog[1]) : Infinity;
        if (hog === undefined || at < hogAt || (at === hogAt && c.unread > hog[1].unread)) hog = e;
      }
      if (!hog) {
        this.unreadTotal = 0; // nothing is held: the count drifted
        return;
      }
      const [s, c] = hog;
      this.log.warn(
        { buffered: c.unread, unreadTotal: this.unreadTotal, limit: this.limits.maxUnreadTotal },
        'admin clients not reading hold too much in all; the one behind longest disconnected',
      );
      this.unreadTotal -= c.unread;
      c.unread = 0;
      s.destroy();
    }
    const max = this.limits.maxUnreadTotal;
    this.unreadCheckAt = Math.max(max, this.unreadTotal + (max >>> 3));
  }

  /** A failure line for request `id`: its message and field bounded (errorBody). */
  private fail(sock: Socket, id: number, e: unknown): void {
    this.send(sock, { id, ok: false, error: errorBody(e) });
  }

  /**
   * One request line: parsed, checked and dispatched in this turn. Nothing of the line is kept past it: a
   * command's answer is awaited by `answer`, which holds the request's id and no more (a pending write
   * holds its candidate, not the line nor its parsed arguments).
   */
  private handle(sock: Socket, line: string, conn: Connection, drains: Set<() => void>): void {
    let id: number;
    let cmd: string;
    let args: Record<string, unknown>;
    try {
      const req = JSON.parse(line) as Partial<AdminRequest> | null;
      if (typeof req !== 'object' || req === null || typeof req.id !== 'number' || typeof req.cmd !== 'string')
        throw new Error('need numeric id and string cmd');
      ({ id, cmd } = req);
      const a = req.args ?? {};
      if (typeof a !== 'object' || Array.isArray(a)) {
        this.fail(sock, id, new AdminFault('bad-request', 'bad request: args must be an object', 'args'));
        return;
      }
      args = a;
    } catch (e) {
      this.fail(sock, 0, new AdminFault('bad-request', `bad request: ${(e as Error).message}`));
      return;
    }
    if (conn.inProgress >= MAX_REQUESTS_IN_PROGRESS) {
      const message = `${MAX_REQUESTS_IN_PROGRESS} requests of this connection await their answer already; wait for some`;
      this.fail(sock, id, new AdminFault('too-many-requests', message));
      return;
    }
    const isStream = Object.hasOwn(this.streams, cmd);
    if (!isStream && !Object.hasOwn(this.handlers, cmd)) {
      this.fail(sock, id, new AdminFault('unknown-command', `unknown command ${echo(cmd)} (${ADMIN_COMMANDS.join(', ')})`));
      return;
    }
    // A field the command does not define is refused before anything is kept of the request.
    const unknown = unknownArgument(cmd as AdminCommand | AdminStream, args);
    if (unknown !== undefined) {
      const message = `bad request: ${cmd} has no argument ${echo(unknown)} (its arguments: ${listArgs(cmd)})`;
      this.fail(sock, id, new AdminFault('bad-request', message, clip(unknown)));
      return;
    }
    // What this request registered to run at the connection's end; dropped once it is answered (streams keep theirs until they end).
    const mine: (() => void)[] = [];
    const call: Call = {
      // Registered after the connection ended (a request that waited its turn): run at once.
      onClose: (f) => {
        if (conn.ended) return f();
        mine.push(f);
        conn.cleanups.add(f);
      },
      onConnectionClose: (f) => (conn.ended ? f() : void conn.cleanups.add(f)),
      conn: sock,
      backlog: () => sock.writableLength,
      onDrain: (f) => {
        drains.add(f);
        return () => drains.delete(f);
      },
    };
    if (isStream) {
      const stream = this.streams[cmd as AdminStream] as StreamHandler<AdminStream>;
      let ended = false;
      // With an error: spookd ends the stream (its last line). Without: it ended by itself, its last event sent (a feed's
      // `compacted`, `overflow`). Either way its subscriptions and callbacks go now; the connection stays for its other requests.
      const end = (error?: AdminErrorBody): void => {
        if (ended) return;
        ended = true;
        for (const f of mine.splice(0)) {
          conn.cleanups.delete(f);
          f();
        }
        if (error) this.send(sock, { id, ok: false, error });
      };
      const emit = (peer: string, event: unknown): void => {
        if (!ended) this.send(sock, { id, peer, event });
      };
      try {
        stream(args, call, emit, end);
      } catch (e) {
        // Refused before it began: what it registered goes with it.
        for (const f of mine.splice(0)) {
          conn.cleanups.delete(f);
          f();
        }
        this.fail(sock, id, e);
        return;
      }
      // Ended before it began: the error line is its only answer.
      if (!ended) this.send(sock, { id, ok: true, result: 'streaming' });
      return;
    }
    // The request lines awaiting their answer are bounded in characters, per connection and in all.
    const chars = line.length;
    const { maxInProgressChars, maxInProgressTotal } = this.limits;
    if (conn.inProgressChars + chars > maxInProgressChars || this.inProgressTotal + chars > maxInProgressTotal) {
      const message =
        conn.inProgressChars + chars > maxInProgressChars
          ? `requests of this connection awaiting their answer hold ${conn.inProgressChars} characters; with this one (${chars}) ` +
            `that is over the limit of ${maxInProgressChars} (maxInProgressChars): wait for some`
          : `requests awaiting their answer hold ${this.inProgressTotal} characters in all; with this one (${chars}) ` +
            `that is over the limit of ${maxInProgressTotal} (maxInProgressTotal): retry later`;
      this.fail(sock, id, new AdminFault('too-many-requests', message));
      return;
    }
    const handler = this.handlers[cmd as AdminCommand] as Handler<AdminCommand>;
    let result: unknown;
    try {
      result = handler(args, call);
    } catch (e) {
      // Refused in this turn (an argument, a name): answered at once, before the lines after it.
      for (const f of mine) conn.cleanups.delete(f);
      this.fail(sock, id, e);
      return;
    }
    conn.inProgress++;
    conn.inProgressChars += chars;
    this.inProgressTotal += chars;
    void this.answer(sock, id, result, conn, mine, chars);
  }

  /** Send a command's answer once it is known; then what it held is released. Holds the id and the pending result only. */
  private async answer(sock: Socket, id: number, result: unknown, conn: Connection, mine: (() => void)[], chars: number): Promise<void> {
    try {
      this.send(sock, { id, ok: true, result: await result });
    } catch (e) {
      this.fail(sock, id, e);
    } finally {
      conn.inProgress--;
      if (!conn.ended) {
        conn.inProgressChars -= chars;
        this.inProgressTotal -= chars;
      }
      for (const f of mine) conn.cleanups.delete(f);
      mine.length = 0;
    }
  }
}

/** A command's argument names, for an error message. */
function listArgs(cmd: string): string {
  const names: readonly string[] = ADMIN_ARGUMENTS[cmd as AdminCommand | AdminStream];
  return names.length === 0 ? 'none' : names.join(', ');
}
