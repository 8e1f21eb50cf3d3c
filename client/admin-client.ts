/**
 * The client side of spookd's admin API (drivers/admin/server.ts): used by the CLI and by
 * applications (see `openRegister` in client/register.ts).
 */
import { connect, type Socket } from 'node:net';

export const DEFAULT_SOCKET = '/run/spook/admin.sock';

export class DaemonNotRunning extends Error {
  constructor(
    readonly socketPath: string,
    cause: string,
  ) {
    super(`spookd is not running or not reachable at ${socketPath} (${cause}); start it with: spookd --config /etc/spook/spookd.conf`);
    this.name = 'DaemonNotRunning';
  }
}

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  onEvent?: (ev: Record<string, unknown>) => void;
}

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
      for (const p of this.pending.values()) p.reject(new Error('spookd closed the admin connection'));
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
    let msg: { id: number; ok?: boolean; result?: unknown; error?: string; event?: Record<string, unknown>; peer?: string };
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
    else p.reject(new Error(msg.error ?? 'request failed'));
  }

  request<T = unknown>(cmd: string, args: Record<string, unknown> = {}): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.sock.write(`${JSON.stringify({ id, cmd, args })}\n`);
    });
  }

  /** A streaming command (watch, events): `onEvent` for each event until close(). */
  stream(cmd: 'watch' | 'events', args: Record<string, unknown>, onEvent: (ev: Record<string, unknown>) => void): Promise<void> {
    const id = this.nextId++;
    return new Promise<void>((resolve, reject) => {
      this.pending.set(id, { resolve: () => resolve(), reject, onEvent });
      this.sock.write(`${JSON.stringify({ id, cmd, args })}\n`);
    });
  }

  close(): void {
    this.sock.end();
  }
}
