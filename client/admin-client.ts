/**
 * The client side of spookd's admin API (client/protocol.ts): used by the CLI and by
 * applications (see `openRegister` in client/register.ts). Every failure rejects with an
 * AdminError whose `code` is stable.
 */
import { connect, type Socket } from 'node:net';
import type {
  AdminCommand,
  AdminErrorBody,
  AdminErrorCode,
  AdminEventLine,
  AdminRequestArgs,
  AdminResult,
  AdminStream,
  AdminStreams,
} from './protocol.js';

export const DEFAULT_SOCKET = '/run/spook/admin.sock';

/** A request that failed: `code` for programs (client/protocol.ts), `message` for people, `field` the argument at fault. */
export class AdminError extends Error {
  constructor(
    readonly code: AdminErrorCode,
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = 'AdminError';
  }
}

/** The socket is not there or refuses connections (code `daemon-not-running`). */
export class DaemonNotRunning extends AdminError {
  constructor(
    readonly socketPath: string,
    cause: string,
  ) {
    super(
      'daemon-not-running',
      `spookd is not running or not reachable at ${socketPath} (${cause}); start it with: spookd --config /etc/spook/spookd.conf`,
    );
    this.name = 'DaemonNotRunning';
  }
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  onEvent?: (ev: unknown) => void;
}

/** A line from the daemon: a response, or an event of a stream (hostile until checked: fields may be missing). */
type Line = Partial<AdminEventLine<Record<string, unknown>>> & {
  id: number;
  ok?: boolean;
  result?: unknown;
  error?: Partial<AdminErrorBody>;
};

export class AdminClient {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private buf = '';

  private constructor(private readonly sock: Socket) {
    sock.setEncoding('utf8');
    sock.on('data', (chunk: string) => {
      this.buf += chunk;
      for (let nl = this.buf.indexOf('\n'); nl >= 0; nl = this.buf.indexOf('\n')) {
        const line = this.buf.slice(0, nl);
        this.buf = this.buf.slice(nl + 1);
        this.onLine(line);
      }
    });
    sock.on('close', () => {
      for (const p of this.pending.values()) p.reject(new AdminError('connection-closed', 'spookd closed the admin connection'));
      this.pending.clear();
    });
  }

  static connect(path = DEFAULT_SOCKET): Promise<AdminClient> {
    return new Promise((resolve, reject) => {
      const sock = connect(path);
      sock.once('connect', () => resolve(new AdminClient(sock)));
      sock.once('error', (e: NodeJS.ErrnoException) => reject(new DaemonNotRunning(path, e.code ?? e.message)));
    });
  }

  private onLine(line: string): void {
    let msg: Line;
    try {
      msg = JSON.parse(line);
    } catch {
      return;
    }
    const p = this.pending.get(msg.id);
    if (!p) return;
    if (msg.event) {
      p.onEvent?.({ peer: msg.peer, ...msg.event });
      return;
    }
    if (!p.onEvent) this.pending.delete(msg.id);
    if (msg.ok) p.resolve(msg.result);
    else p.reject(new AdminError(msg.error?.code ?? 'internal', msg.error?.message ?? 'request failed', msg.error?.field));
  }

  private send(cmd: string, args: object, p: Pending): void {
    const id = this.nextId++;
    this.pending.set(id, p);
    this.sock.write(`${JSON.stringify({ id, cmd, args })}\n`);
  }

  /** One command and its result (client/protocol.ts); rejects with an AdminError. */
  request<C extends AdminCommand>(cmd: C, ...[args]: AdminRequestArgs<C>): Promise<AdminResult<C>> {
    return new Promise<AdminResult<C>>((resolve, reject) =>
      this.send(cmd, args ?? {}, { resolve: resolve as (v: unknown) => void, reject }),
    );
  }

  /** A streaming command (watch, events): `onEvent` for each event until close(). */
  stream<S extends AdminStream>(cmd: S, args: AdminStreams[S]['args'], onEvent: (ev: AdminStreams[S]['event']) => void): Promise<void> {
    return new Promise<void>((resolve, reject) =>
      this.send(cmd, args, { resolve: () => resolve(), reject, onEvent: (ev) => onEvent(ev as AdminStreams[S]['event']) }),
    );
  }

  close(): void {
    this.sock.end();
  }
}
