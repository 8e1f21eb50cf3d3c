/**
 * The application library: open a register on a running spookd, propose changes and
 * await their collapse, observe collapses and lifecycle events. See docs/LIBRARY.md.
 */
import { AdminClient, AdminError, DEFAULT_SOCKET, DEFAULT_TIMEOUT_MS, type CallOptions } from './admin-client.js';
import type { AdminStreams, CollapseEvent, LifecycleEvent, MapGetResult, Outcome } from './protocol.js';

export type { Outcome } from './protocol.js';
export type { CallOptions } from './admin-client.js';

/** Options of onCollapse/onLifecycle: `onEnd` is told (code `connection-closed`) when spookd ends the stream; reopen it then. */
export interface WatchOptions extends CallOptions {
  onEnd?: (e: AdminError) => void;
}

/**
 * A map key read at one committed version. `bytes` always holds the value; `value` is the same as
 * text only when it is valid UTF-8 (a binary value is never lost: read `bytes`).
 */
export interface RegisterValue {
  found: boolean;
  bytes?: Uint8Array;
  value?: string;
  valueBase64?: string;
  keyVersion?: number;
  version: number;
}

export interface RegisterHandle {
  get(key: string, opts?: CallOptions): Promise<RegisterValue>;
  set(key: string, value: string | Uint8Array, opts?: CallOptions): Promise<Outcome>;
  cas(key: string, expect: number, value: string | Uint8Array, opts?: CallOptions): Promise<Outcome>;
  del(key: string, opts?: CallOptions): Promise<Outcome>;
  append(data: string | Uint8Array, opts?: CallOptions): Promise<Outcome>;
  onCollapse(fn: (ev: CollapseEvent) => void, opts?: WatchOptions): Promise<void>;
  onLifecycle(fn: (ev: LifecycleEvent) => void, opts?: WatchOptions): Promise<void>;
  close(): void;
}

type BytesArg<N extends string> = { [K in N]?: string } & { [K in `${N}Base64`]?: string };
const bytesArg = <N extends string>(name: N, v: string | Uint8Array): BytesArg<N> =>
  (typeof v === 'string' ? { [name]: v } : { [`${name}Base64`]: Buffer.from(v).toString('base64') }) as BytesArg<N>;

/** How long spookd waits for a write's outcome before answering `pending` (its default; less when the call's deadline is nearer). */
const OUTCOME_WAIT_MS = 10_000;
/** Reconnection backoff: doubling from the first delay up to the cap, every attempt within the call's deadline. */
const BACKOFF_FIRST_MS = 50;
const BACKOFF_MAX_MS = 1_000;

/** A call's deadline (absolute, Date.now() clock) and signal. */
interface Deadline {
  at: number;
  ms: number;
  signal?: AbortSignal;
}
const deadline = (opts: CallOptions = {}): Deadline => {
  const ms = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  return { at: Date.now() + ms, ms, signal: opts.signal };
};
const left = (d: Deadline): number => Math.max(0, d.at - Date.now());

/** Waits `ms` unless the signal fires first (then rejects `aborted`). */
function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    const onAbort = (): void => {
      clearTimeout(t);
      reject(new AdminError('aborted', 'aborted while reconnecting to spookd'));
    };
    const t = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

export async function openRegister(register: string, opts: { peer?: string; socket?: string } = {}): Promise<RegisterHandle> {
  const path = opts.socket ?? DEFAULT_SOCKET;
  let client = await AdminClient.connect(path);
  let closed = false;
  const streams: AdminClient[] = [];
  const base = { register, ...(opts.peer ? { peer: opts.peer } : {}) };

  /** The connection, reopened with bounded backoff if spookd went away since (a restart); each attempt within `d`. */
  async function conn(d: Deadline): Promise<AdminClient> {
    if (closed) throw new AdminError('connection-closed', 'the register handle was closed');
    if (client.open) return client;
    // Each call retries on its own deadline and signal; the first to connect installs its client, the others use it.
    let delay = BACKOFF_FIRST_MS;
    let last = '';
    for (;;) {
      if (d.signal?.aborted) throw new AdminError('aborted', 'aborted while reconnecting to spookd');
      try {
        const fresh = await AdminClient.connect(path);
        if (closed || client.open) fresh.close();
        else client = fresh;
        return conn(d);
      } catch (e) {
        if (e instanceof AdminError && e.code === 'connection-closed') throw e;
        last = (e as Error).message;
      }
      if (left(d) <= delay) throw new AdminError('timeout', `spookd not reachable at ${path} within ${d.ms} ms: ${last}`);
      await sleep(delay, d.signal);
      delay = Math.min(delay * 2, BACKOFF_MAX_MS);
    }
  }

  /** A write: spookd answers `pending` after OUTCOME_WAIT_MS, or 1 s before the call's deadline if that is sooner. */
  const write = async <C extends 'set' | 'cas' | 'del' | 'append'>(cmd: C, args: object, o?: CallOptions): Promise<Outcome> => {
    const d = deadline(o);
    const c = await conn(d);
    const timeoutMs = Math.min(OUTCOME_WAIT_MS, Math.max(0, left(d) - 1_000));
    return c.request(cmd, { ...base, ...args, timeoutMs } as never, { timeoutMs: left(d), signal: d.signal });
  };

  async function stream<S extends 'watch' | 'events'>(
    cmd: S,
    args: AdminStreams[S]['args'],
    fn: (ev: AdminStreams[S]['event']) => void,
    o: WatchOptions = {},
  ): Promise<void> {
    const d = deadline(o);
    // One connection per stream: its end (spookd stopped) is the stream's end, told to onEnd.
    const c = await AdminClient.connect(path);
    streams.push(c);
    await c.stream(cmd, args, fn, { timeoutMs: left(d), signal: d.signal, onEnd: o.onEnd });
  }

  return {
    async get(key, o) {
      const d = deadline(o);
      const c = await conn(d);
      const r = (await c.request('get', { ...base, key }, { timeoutMs: left(d), signal: d.signal })) as MapGetResult; // get(key) is for map registers
      const bytes = r.value ? new Uint8Array(Buffer.from(r.value.base64, 'base64')) : undefined;
      return { found: r.found, bytes, value: r.value?.text, valueBase64: r.value?.base64, keyVersion: r.keyVersion, version: r.version };
    },
    set: (key, value, o) => write('set', { key, ...bytesArg('value', value) }, o),
    cas: (key, expect, value, o) => write('cas', { key, expect, ...bytesArg('value', value) }, o),
    del: (key, o) => write('del', { key }, o),
    append: (data, o) => write('append', bytesArg('data', data), o),
    onCollapse: (fn, o) => stream('watch', base, fn, o),
    onLifecycle: (fn, o) => {
      const args: AdminStreams['events']['args'] = opts.peer ? { peer: opts.peer } : {};
      return stream(
        'events',
        args,
        (ev) => {
          if (ev.type === 'lifecycle') fn(ev);
        },
        o,
      );
    },
    close() {
      closed = true;
      client.close();
      for (const s of streams) s.close();
    },
  };
}
