/**
 * The client side of spookd's admin API (client/protocol.ts): used by the CLI and by
 * applications (see `openRegister` in client/register.ts). Every failure rejects with a
 * SpookError whose `code` is stable.
 */
import { connect, type Socket } from 'node:net';
import {
  ADMIN_MAX_REQUEST,
  type AdminArgs,
  type AdminCommand,
  type AdminErrorBody,
  type AdminErrorCode,
  type AdminEventLine,
  type AdminResult,
  type AdminStream,
  type AdminStreams,
} from './protocol.js';

export const DEFAULT_SOCKET = '/run/spook/admin.sock';

/**
 * Every failure of the library: `code` for programs (stable, client/protocol.ts ADMIN_ERROR_CODES),
 * `message` for people, `field` the argument at fault.
 */
export class SpookError extends Error {
  constructor(
    readonly code: AdminErrorCode,
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = 'SpookError';
  }
}

/** The former name of SpookError, kept so existing `instanceof AdminError` checks still hold. */
export const AdminError = SpookError;
export type AdminError = SpookError;

/** The socket is not there or refuses connections (code `daemon-not-running`). */
export class DaemonNotRunning extends SpookError {
  constructor(
    readonly socketPath: string,
    cause: string,
  ) {
    super(
      'daemon-not-running',
      cause === 'EACCES'
        ? `no permission to use spookd's admin socket ${socketPath} (EACCES): run as root, or as a member of the group set as adminGroup in spookd's configuration`
        : `spookd is not running or not reachable at ${socketPath} (${cause}); start it with: spookd --config /etc/spook/spookd.conf`,
    );
    this.name = 'DaemonNotRunning';
  }
}

/** Per-call options: a deadline (default DEFAULT_TIMEOUT_MS) and a signal to abandon the call. */
export interface CallOptions {
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** A call with no `timeoutMs` rejects with code `timeout` after this long. */
export const DEFAULT_TIMEOUT_MS = 30_000;

/** Options of a stream: the deadline and signal bound its start; `onEnd` is told when it ends other than by close(). */
export interface StreamOptions extends CallOptions {
  onEnd?: (e: SpookError) => void;
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  onEvent?: (ev: unknown) => void;
  onEnd?: (e: SpookError) => void;
  /** A stream whose start was answered: it now ends through onEnd. */
  started?: boolean;
  /** Clears the timer and the abort listener. */
  release: () => void;
}

/** A line from the daemon: a response, or an event of a stream (hostile until checked: fields may be missing). */
type Line = Partial<AdminEventLine<Record<string, unknown>>> & {
  id: number;
  ok?: boolean;
  result?: unknown;
  error?: Partial<AdminErrorBody>;
};

/** The arguments of a request then its options: the arguments are optional when the command needs none. */
export type RequestParams<C extends AdminCommand> =
  Record<string, never> extends AdminArgs<C> ? [args?: AdminArgs<C>, opts?: CallOptions] : [args: AdminArgs<C>, opts?: CallOptions];

/** The longest delay setTimeout holds: a signed 32-bit count of ms (24.8 days). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * An unref'd timer calling `fn` after `ms`, however long. setTimeout fires a longer delay (or
 * Infinity) after 1 ms, with a warning: a call given 30 days, or Infinity, was abandoned as
 * `timeout` at once although spookd answered (a write took effect and its caller heard it had
 * timed out). A longer delay is waited out in steps of MAX_TIMER_MS; Infinity never fires.
 */
function longTimeout(fn: () => void, ms: number): { clear(): void } {
  let t: NodeJS.Timeout | undefined;
  const arm = (left: number): void => {
    if (left === Infinity) return;
    const step = Math.min(left, MAX_TIMER_MS);
    t = setTimeout(() => (left > step ? arm(left - step) : fn()), step);
    t.unref();
  };
  arm(ms);
  return { clear: () => clearTimeout(t) };
}

export class AdminClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private buf = '';
  private closedBy: SpookError | undefined;
  /** spookd refused this connection (a line of id 0: too-busy, request-too-large) and closes it next: what its calls end with. */
  private refusedBy: SpookError | undefined;

  private constructor(private readonly sock: Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      // Search only the new chunk: a large value's answer arrives in many, and searching the
      // whole line so far on each would be quadratic (an 89 MB line: seconds).
      for (let nl = chunk.indexOf('\n'); nl >= 0; nl = chunk.indexOf('\n')) {
        const line = this.buf + chunk.slice(0, nl);
        chunk = chunk.slice(nl + 1);
        this.buf = '';
        this.onLine(line);
      }
      this.buf += chunk;
    });
    // 'end' (the daemon closed its side: half-open), 'error' and 'close' each end every call at once; the first wins.
    const gone = (why: string) => () =>
      this.fail(this.refusedBy ?? new SpookError('connection-closed', `spookd closed the admin connection (${why})`));
    sock.on('end', gone('end'));
    sock.on('error', (e: NodeJS.ErrnoException) => gone(e.code ?? e.message)());
    sock.on('close', gone('close'));
  }

  static connect(path = DEFAULT_SOCKET): Promise<AdminClient> {
    return new Promise((resolve, reject) => {
      const sock = connect(path);
      sock.once('connect', () => resolve(new AdminClient(sock)));
      sock.once('error', (e: NodeJS.ErrnoException) => reject(new DaemonNotRunning(path, e.code ?? e.message)));
    });
  }

  /** False once the connection ended (the daemon stopped, or close()): every later call rejects with `connection-closed`. */
  get open(): boolean {
    return this.closedBy === undefined;
  }

  private fail(e: SpookError, graceful = false): void {
    if (this.closedBy) return;
    this.closedBy = e;
    const all = [...this.pending.values()];
    this.pending.clear();
    for (const p of all) {
      p.release();
      if (p.started) p.onEnd?.(e);
      else p.reject(e);
    }
    // close() lets what was written reach the daemon; a broken connection is torn down.
    if (graceful) this.sock.end();
    else this.sock.destroy();
  }

  private onLine(line: string): void {
    let msg: Line;
    try {
      msg = JSON.parse(line);
    } catch {
      return;
    }
    // JSON but no response (`null`, a number): ignored as a line that is not JSON is, not read as one (a TypeError
    // here escapes the socket's handler: nothing can catch it, and the application's process ends).
    if (typeof msg !== 'object' || msg === null) return;
    // id 0: the daemon refused a line it could not attribute (too large, not JSON); it closes the connection next if it must.
    // When it does (too-busy, request-too-large), the calls end with that refusal, not as if spookd had stopped.
    const closing = msg.id === 0 && msg.ok === false && (msg.error?.code === 'too-busy' || msg.error?.code === 'request-too-large');
    if (closing) this.refusedBy ??= new SpookError(msg.error!.code!, msg.error?.message ?? 'spookd refused the connection');
    const p = this.pending.get(msg.id);
    if (!p) return;
    if (msg.event) {
      p.onEvent?.({ peer: msg.peer, ...msg.event });
      return;
    }
    p.release();
    if (p.started) {
      // spookd ended a started stream with an error line (what it was bound to is gone: `peer-removed`);
      // the connection stays.
      this.pending.delete(msg.id);
      if (!msg.ok) p.onEnd?.(new SpookError(msg.error?.code ?? 'internal', msg.error?.message ?? 'stream ended', msg.error?.field));
      return;
    }
    if (p.onEvent && msg.ok) {
      p.started = true;
      p.resolve(msg.result);
      return;
    }
    this.pending.delete(msg.id);
    if (msg.ok) p.resolve(msg.result);
    else p.reject(new SpookError(msg.error?.code ?? 'internal', msg.error?.message ?? 'request failed', msg.error?.field));
  }

  private send(cmd: string, args: object, opts: CallOptions, p: Omit<Pending, 'release'>): void {
    if (this.closedBy) return p.reject(this.closedBy);
    const line = JSON.stringify({ id: this.nextId, cmd, args });
    // The daemon closes the connection on a longer line: refuse it here and keep the connection.
    if (line.length > ADMIN_MAX_REQUEST)
      return p.reject(
        new SpookError('request-too-large', `request line of ${line.length} characters; spookd accepts ${ADMIN_MAX_REQUEST}`),
      );
    if (opts.signal?.aborted) return p.reject(new SpookError('aborted', `${cmd} aborted before it was sent`));
    const id = this.nextId++;
    // A request that asks the daemon to wait (`timeoutMs` among its arguments) gets that long and 5 s more by default.
    const wait = (args as { timeoutMs?: unknown }).timeoutMs;
    const timeoutMs = opts.timeoutMs ?? (typeof wait === 'number' ? Math.max(DEFAULT_TIMEOUT_MS, wait + 5_000) : DEFAULT_TIMEOUT_MS);
    const abandon = (e: SpookError): void => {
      if (this.pending.get(id) !== entry) return;
      this.pending.delete(id);
      entry.release();
      entry.reject(e);
    };
    const onAbort = (): void => abandon(new SpookError('aborted', `${cmd} aborted`));
    const timer = longTimeout(() => abandon(new SpookError('timeout', `${cmd}: no answer from spookd within ${timeoutMs} ms`)), timeoutMs);
    opts.signal?.addEventListener('abort', onAbort, { once: true });
    const entry: Pending = {
      ...p,
      release: () => {
        timer.clear();
        opts.signal?.removeEventListener('abort', onAbort);
      },
    };
    this.pending.set(id, entry);
    this.sock.write(`${line}\n`);
  }

  /** Calls awaiting an answer, streams included (for tests: a call that settled leaves none behind). */
  get pendingCount(): number {
    return this.pending.size;
  }

  /** One command and its result (client/protocol.ts); rejects with a SpookError (`timeout`, `aborted`, `connection-closed` too). */
  request<C extends AdminCommand>(cmd: C, ...[args, opts]: RequestParams<C>): Promise<AdminResult<C>> {
    return new Promise<AdminResult<C>>((resolve, reject) =>
      this.send(cmd, args ?? {}, opts ?? {}, { resolve: resolve as (v: unknown) => void, reject }),
    );
  }

  /**
   * A streaming command (watch, events): resolves once the daemon started it, then `onEvent` for each event until
   * close(). If the connection ends first (spookd stopped), `opts.onEnd` gets a `connection-closed` SpookError:
   * the stream is over and must be reopened on a new client. If spookd ends the stream itself (its peer was
   * removed by a reload), `opts.onEnd` gets that error's code (`peer-removed`): reopening it would be refused.
   */
  stream<S extends AdminStream>(
    cmd: S,
    args: AdminStreams[S]['args'],
    onEvent: (ev: AdminStreams[S]['event']) => void,
    opts: StreamOptions = {},
  ): Promise<void> {
    return new Promise<void>((resolve, reject) =>
      this.send(cmd, args, opts, {
        resolve: () => resolve(),
        reject,
        onEvent: (ev) => onEvent(ev as AdminStreams[S]['event']),
        onEnd: opts.onEnd,
      }),
    );
  }

  /** Stop reading the connection (a stream's consumer is behind): spookd's buffer for it fills, then it tells `overflow`. */
  pause(): void {
    this.sock.pause();
  }

  resume(): void {
    this.sock.resume();
  }

  /** Ends the connection: pending calls reject with `connection-closed`; streams end without onEnd. */
  close(): void {
    for (const p of this.pending.values()) p.onEnd = undefined;
    this.fail(new SpookError('connection-closed', 'the admin client was closed'), true);
  }
}
