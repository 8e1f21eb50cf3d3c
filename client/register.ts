/**
 * The application library: open a register on a running spookd, propose changes and
 * await their collapse, observe collapses and lifecycle events. See docs/LIBRARY.md.
 */
import { AdminClient, DEFAULT_SOCKET } from './admin-client.js';
import type { AdminStreams, CollapseEvent, LifecycleEvent, MapGetResult, Outcome } from './protocol.js';

export type { Outcome } from './protocol.js';

export interface RegisterHandle {
  get(key: string): Promise<{ found: boolean; value?: string; valueBase64?: string; keyVersion?: number; version: number }>;
  set(key: string, value: string | Uint8Array): Promise<Outcome>;
  cas(key: string, expect: number, value: string | Uint8Array): Promise<Outcome>;
  del(key: string): Promise<Outcome>;
  append(data: string | Uint8Array): Promise<Outcome>;
  onCollapse(fn: (ev: CollapseEvent) => void): Promise<void>;
  onLifecycle(fn: (ev: LifecycleEvent) => void): Promise<void>;
  close(): void;
}

type BytesArg<N extends string> = { [K in N]?: string } & { [K in `${N}Base64`]?: string };
const bytesArg = <N extends string>(name: N, v: string | Uint8Array): BytesArg<N> =>
  (typeof v === 'string' ? { [name]: v } : { [`${name}Base64`]: Buffer.from(v).toString('base64') }) as BytesArg<N>;

export async function openRegister(register: string, opts: { peer?: string; socket?: string } = {}): Promise<RegisterHandle> {
  const client = await AdminClient.connect(opts.socket ?? DEFAULT_SOCKET);
  const streams: AdminClient[] = [];
  const base = { register, ...(opts.peer ? { peer: opts.peer } : {}) };
  return {
    async get(key) {
      const r = (await client.request('get', { ...base, key })) as MapGetResult; // get(key) is for map registers
      return { found: r.found, value: r.value?.text, valueBase64: r.value?.base64, keyVersion: r.keyVersion, version: r.version };
    },
    set: (key, value) => client.request('set', { ...base, key, ...bytesArg('value', value) }),
    cas: (key, expect, value) => client.request('cas', { ...base, key, expect, ...bytesArg('value', value) }),
    del: (key) => client.request('del', { ...base, key }),
    append: (data) => client.request('append', { ...base, ...bytesArg('data', data) }),
    async onCollapse(fn) {
      const c = await AdminClient.connect(opts.socket ?? DEFAULT_SOCKET);
      streams.push(c);
      void c.stream('watch', base, fn);
    },
    async onLifecycle(fn) {
      const c = await AdminClient.connect(opts.socket ?? DEFAULT_SOCKET);
      streams.push(c);
      const args: AdminStreams['events']['args'] = opts.peer ? { peer: opts.peer } : {};
      void c.stream('events', args, (ev) => {
        if (ev.type === 'lifecycle') fn(ev);
      });
    },
    close() {
      client.close();
      for (const s of streams) s.close();
    },
  };
}
