/**
 * A session with spookd for the library's handles (registers, domains): one request connection,
 * reopened with bounded backoff after spookd restarts, each attempt within the calling
 * operation's deadline; streams on connections of their own; one close() for all.
 */
import {
  AdminClient,
  SpookError,
  DEFAULT_SOCKET,
  DEFAULT_TIMEOUT_MS,
  type CallOptions,
  type RequestParams,
  type StreamOptions,
} from './admin-client.js';
import type { AdminCommand, AdminResult, AdminStream, AdminStreams, AdminArgs } from './protocol.js';

/** Reconnection backoff: doubling from the first delay up to the cap, every attempt within the call's deadline. */
const BACKOFF_FIRST_MS = 50;
const BACKOFF_MAX_MS = 1_000;

/**
 * An operation's deadline (absolute, on the monotonic performance.now() clock: a step of the
 * wall clock moves no deadline) and signal; one operation may make several calls.
 */
export interface Deadline {
  at: number;
  ms: number;
  signal?: AbortSignal;
}

export const deadline = (opts: CallOptions = {}): Deadline => {
  const ms = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  return { at: performance.now() + ms, ms, signal: opts.signal };
};

/** Milliseconds left before the deadline (0 when past). */
export const left = (d: Deadline): number => Math.max(0, Math.floor(d.at - performance.now())); // whole ms: the daemon takes integers

/** The per-call options of one request made within `d`. */
export const within = (d: Deadline): CallOptions => ({ timeoutMs: left(d), signal: d.signal });

/** Waits `ms` unless the signal fires first (then rejects `aborted`). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(t);
      reject(new SpookError('aborted', 'aborted while reconnecting to spookd'));
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/** How long spookd waits for a write's outcome before answering `pending` (its default; less when the call's deadline is nearer). */
const OUTCOME_WAIT_MS = 10_000;

export class Session {
  private closed = false;
  private readonly streams = new Set<AdminClient>();

  private constructor(
    readonly path: string,
    private client: AdminClient,
  ) {}

  /** Connects once now, so a handle opened while spookd is down fails at once (`daemon-not-running`). */
  static async open(socket: string = DEFAULT_SOCKET): Promise<Session> {
    return new Session(socket, await AdminClient.connect(socket));
  }

  /** The request connection, reopened with bounded backoff if spookd went away since (a restart); each attempt within `d`. */
  async conn(d: Deadline): Promise<AdminClient> {
    if (this.closed) throw new SpookError('connection-closed', 'the handle was closed');
    if (this.client.open) return this.client;
    // Each call retries on its own deadline and signal; the first to connect installs its client, the others use it.
    let delay = BACKOFF_FIRST_MS;
    let last = '';
    for (;;) {
      if (d.signal?.aborted) throw new SpookError('aborted', 'aborted while reconnecting to spookd');
      try {
        const fresh = await AdminClient.connect(this.path);
        if (this.closed || this.client.open) fresh.close();
        else this.client = fresh;
        return this.conn(d);
      } catch (e) {
        if (e instanceof SpookError && e.code === 'connection-closed') throw e;
        last = (e as Error).message;
      }
      if (left(d) <= delay) throw new SpookError('timeout', `spookd not reachable at ${this.path} within ${d.ms} ms: ${last}`);
      await sleep(delay, d.signal);
      delay = Math.min(delay * 2, BACKOFF_MAX_MS);
    }
  }

  /** Whether close() was called: nothing of this session reconnects or resubscribes after it. */
  get isClosed(): boolean {
    return this.closed;
  }

  /** One request within the deadline `d`, reconnecting first if needed. */
  async request<C extends AdminCommand>(cmd: C, args: AdminArgs<C>, d: Deadline): Promise<AdminResult<C>> {
    const c = await this.conn(d);
    return c.request(cmd, ...([args, within(d)] as RequestParams<C>));
  }

  /**
   * A write within `d`: spookd answers `pending` after OUTCOME_WAIT_MS, or 1 s before the
   * deadline if that is sooner (half the time left, when under 2 s), reckoned once connected (a
   * reconnect spends the deadline too, and a write that waited for one must still hear `pending`
   * rather than time out).
   */
  async write<C extends AdminCommand>(cmd: C, args: Omit<AdminArgs<C>, 'timeoutMs'>, d: Deadline): Promise<AdminResult<C>> {
    const c = await this.conn(d);
    // The answer's margin is a share of a short call, not a whole second: with 1 s taken from any call of 1 s
    // or less, spookd was asked to wait 0 ms and a write that commits in milliseconds was always `pending`
    // (a domain write held while its member catches up: refused at once).
    const rest = left(d);
    const timeoutMs = Math.max(0, Math.min(OUTCOME_WAIT_MS, rest - Math.min(1_000, Math.ceil(rest / 2))));
    return c.request(cmd, ...([{ ...args, timeoutMs }, within(d)] as RequestParams<C>));
  }

  /**
   * A stream on a connection of its own: its end (spookd stopped, or ended the stream: `peer-removed`) is
   * the stream's end, told to `opts.onEnd`. Returns that connection (close it to stop the stream); it closes with the session.
   */
  async stream<S extends AdminStream>(
    cmd: S,
    args: AdminStreams[S]['args'],
    fn: (ev: AdminStreams[S]['event']) => void,
    opts: StreamOptions = {},
  ): Promise<AdminClient> {
    const gone = (): SpookError => new SpookError('connection-closed', 'the handle was closed');
    if (this.closed) throw gone();
    const d = deadline(opts);
    const c = await AdminClient.connect(this.path);
    // close() may have run while this connected: it could not close what it did not know of.
    if (this.closed) {
      c.close();
      throw gone();
    }
    this.streams.add(c);
    const onEnd = (e: SpookError): void => {
      this.streams.delete(c);
      c.close(); // ended by spookd (an error line) rather than by the connection: the connection is this stream's alone
      opts.onEnd?.(e);
    };
    try {
      await c.stream(cmd, args, fn, { ...within(d), onEnd });
    } catch (e) {
      this.streams.delete(c);
      c.close();
      throw this.closed ? gone() : e;
    }
    if (this.closed) {
      this.streams.delete(c);
      c.close();
      throw gone();
    }
    return c;
  }

  /** Ends one stream opened by stream() (without its onEnd) and forgets it. */
  endStream(c: AdminClient): void {
    this.streams.delete(c);
    c.close();
  }

  /** Closes the request connection and every stream (streams end without onEnd). */
  close(): void {
    this.closed = true;
    this.client.close();
    for (const s of this.streams) s.close();
    this.streams.clear();
  }
}
