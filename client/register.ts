/**
 * The application library: open a register on a running spookd, propose changes and
 * await their collapse, observe collapses and lifecycle events. See docs/LIBRARY.md.
 */
import { AdminClient, DEFAULT_SOCKET } from './admin-client.js';

export interface Outcome {
  verdict: 'committed' | 'rejected' | 'pending';
  reason: string | null;
  version: number | null;
  origin: number;
  seq: number;
}

export interface RegisterHandle {
  get(key: string): Promise<{ found: boolean; value?: string; valueBase64?: string; keyVersion?: number; version: number }>;
  set(key: string, value: string | Uint8Array): Promise<Outcome>;
  cas(key: string, expect: number, value: string | Uint8Array): Promise<Outcome>;
  del(key: string): Promise<Outcome>;
  append(data: string | Uint8Array): Promise<Outcome>;
  onCollapse(
    fn: (ev: { version: number; hash: string; entries: { origin: number; seq: number; verdict: number }[] }) => void,
  ): Promise<void>;
  onLifecycle(fn: (ev: { from: string; to: string; cause: string }) => void): Promise<void>;
  close(): void;
}

const bytesArg = (name: string, v: string | Uint8Array): Record<string, string> =>
  typeof v === 'string' ? { [name]: v } : { [`${name}Base64`]: Buffer.from(v).toString('base64') };

export async function openRegister(register: string, opts: { peer?: string; socket?: string } = {}): Promise<RegisterHandle> {
  const client = await AdminClient.connect(opts.socket ?? DEFAULT_SOCKET);
  const streams: AdminClient[] = [];
  const base = { register, ...(opts.peer ? { peer: opts.peer } : {}) };
  return {
    async get(key) {
      const r = await client.request<{ found: boolean; value?: { base64: string; text?: string }; keyVersion?: number; version: number }>(
        'get',
        { ...base, key },
      );
      return { found: r.found, value: r.value?.text, valueBase64: r.value?.base64, keyVersion: r.keyVersion, version: r.version };
    },
    set: (key, value) => client.request<Outcome>('set', { ...base, key, ...bytesArg('value', value) }),
    cas: (key, expect, value) => client.request<Outcome>('cas', { ...base, key, expect, ...bytesArg('value', value) }),
    del: (key) => client.request<Outcome>('del', { ...base, key }),
    append: (data) => client.request<Outcome>('append', { ...base, ...bytesArg('data', data) }),
    async onCollapse(fn) {
      const c = await AdminClient.connect(opts.socket ?? DEFAULT_SOCKET);
      streams.push(c);
      void c.stream('watch', base, (ev) => fn(ev as never));
    },
    async onLifecycle(fn) {
      const c = await AdminClient.connect(opts.socket ?? DEFAULT_SOCKET);
      streams.push(c);
      void c.stream('events', opts.peer ? { peer: opts.peer } : {}, (ev) => {
        if (ev.type === 'lifecycle') fn(ev as never);
      });
    },
    close() {
      client.close();
      for (const s of streams) s.close();
    },
  };
}
