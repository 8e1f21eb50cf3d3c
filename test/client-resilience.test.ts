import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { spawn } from 'node:child_process';
import { connect, type Socket } from 'node:net';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { configSchema } from '../drivers/daemon/config.js';
import { Spookd } from '../drivers/daemon/spookd.js';
import { encodeKey } from '../drivers/daemon/keys.js';
import { generateKeyPair } from '../crypto/primitives.js';
import { AdminClient, AdminError } from '../client/admin-client.js';
import { openRegister } from '../client/register.js';
import { ADMIN_MAX_REQUEST, type CollapseEvent } from '../client/protocol.js';
import { MAX_REQUESTS_IN_PROGRESS } from '../drivers/admin/server.js';
import { portBase } from './ports.js';

/**
 * The client against a real spookd in this process that stops and restarts under it: every call
 * ends (timeout, abort, connection-closed), streams end explicitly, a register handle reconnects,
 * an oversize request is refused before it is sent. The peer never runs, so domain writes stay pending.
 */
const dir = mkdtempSync(join(tmpdir(), 'spook-client-'));
const port = portBase('client-resilience.test.ts');
const socket = join(dir, 'a.sock');
const keys = { a: generateKeyPair(), b: generateKeyPair() };
let d: Spookd | undefined;

function make(): Spookd {
  writeFileSync(join(dir, 'a.key'), Buffer.from(keys.a.privateKey).toString('base64'));
  const cfg = configSchema.parse({
    listen: `127.0.0.1:${port}`,
    privateKeyFile: join(dir, 'a.key'),
    dataDir: join(dir, 'a'),
    adminSocket: socket,
    fsync: 'never',
    timing: { keepaliveMs: 100, silenceMs: 3000 },
    peers: [{ name: 'b', publicKey: encodeKey(keys.b.publicKey), endpoint: `127.0.0.1:${port + 1}` }],
    registers: [{ name: 'config', kind: 'map' }],
    // A domain whose other member never runs: no majority, so a write there waits for its outcome as long as asked.
    domains: [
      { name: 'main', members: ['b'], registers: [{ name: 'kv', kind: 'map' }], policy: 'buffer' },
      { name: 'wide', members: ['b'], registers: [{ name: 'kv', kind: 'map' }], policy: 'buffer', maxPending: 4096 },
    ],
  });
  return new Spookd(cfg, keys.a, pino({ level: 'silent' }));
}

async function start(): Promise<void> {
  d = make();
  await d.start();
}
async function stop(): Promise<void> {
  await d?.stop();
  d = undefined;
}

beforeAll(start);
afterAll(async () => {
  await stop();
  rmSync(dir, { recursive: true, force: true });
});

/** A write spookd holds `waitMs` for an outcome that cannot come (the domain has no majority). */
const held = (c: AdminClient, waitMs: number, opts?: { timeoutMs?: number; signal?: AbortSignal }): Promise<unknown> =>
  c.request('dpropose', { domain: 'main', ops: [{ register: 'kv', op: 'set', key: 'k', value: 'v' }], timeoutMs: waitMs }, opts);

/** The AdminError a promise rejects with. */
async function failure(p: Promise<unknown>): Promise<AdminError> {
  const e = await p.then(
    () => undefined,
    (x: unknown) => x,
  );
  expect(e).toBeInstanceOf(AdminError);
  return e as AdminError;
}

describe('client resilience', { timeout: 15_000 }, () => {
  it('a call past its timeoutMs rejects with timeout, and leaves nothing pending', async () => {
    const c = await AdminClient.connect(socket);
    try {
      const t0 = Date.now();
      const e = await failure(held(c, 5_000, { timeoutMs: 100 }));
      expect(e.code).toBe('timeout');
      expect(Date.now() - t0).toBeLessThan(2_000);
      expect(c.pendingCount).toBe(0);
      expect((await c.request('status', {}, { timeoutMs: 2_000 })).pairs[0]?.peer).toBe('b'); // still usable
    } finally {
      c.close();
    }
  });

  it('an AbortSignal rejects the call with aborted', async () => {
    const c = await AdminClient.connect(socket);
    try {
      const ac = new AbortController();
      const p = held(c, 5_000, { signal: ac.signal });
      setTimeout(() => ac.abort(), 50);
      expect((await failure(p)).code).toBe('aborted');
      expect(c.pendingCount).toBe(0);
      expect((await failure(c.request('status', {}, { signal: AbortSignal.abort() }))).code).toBe('aborted');
      const h = await openRegister('config', { socket });
      expect((await failure(h.set('k', 'v', { signal: AbortSignal.abort() }))).code).toBe('aborted');
      expect((await h.get('k', { signal: new AbortController().signal })).version).toBeGreaterThanOrEqual(0);
      h.close();
    } finally {
      c.close();
    }
  });

  it('an oversize request is refused before sending and the connection stays usable', async () => {
    const c = await AdminClient.connect(socket);
    const h = await openRegister('config', { socket });
    try {
      const big = 'x'.repeat(ADMIN_MAX_REQUEST + 1);
      expect((await failure(c.request('get', { register: 'config', key: big }))).code).toBe('request-too-large');
      expect(c.pendingCount).toBe(0);
      expect(c.open).toBe(true);
      expect((await c.request('get', { register: 'config', key: 'small' })).found).toBe(false);
      expect((await failure(h.set('k', big))).code).toBe('request-too-large');
      expect((await h.get('small')).found).toBe(false);
    } finally {
      c.close();
      h.close();
    }
  });

  it('spookd stopping ends pending calls and watches with connection-closed; a handle reconnects after a restart', async () => {
    const c = await AdminClient.connect(socket);
    const h = await openRegister('config', { socket });
    const ended: AdminError[] = [];
    const collapses: CollapseEvent[] = [];
    await h.onCollapse((ev) => collapses.push(ev), { onEnd: (e) => ended.push(e) });
    const pendingRaw = failure(held(c, 8_000));
    const c2 = await AdminClient.connect(socket);
    const pendingSecond = failure(c2.request('get', { register: 'config', key: 'k' }).then(() => held(c2, 8_000)));
    await new Promise((r) => setTimeout(r, 100));
    const t0 = Date.now();
    await stop();
    expect((await pendingRaw).code).toBe('connection-closed');
    expect((await pendingSecond).code).toBe('connection-closed');
    expect(Date.now() - t0).toBeLessThan(1_000);
    expect(c.open).toBe(false);
    expect((await failure(c.request('status'))).code).toBe('connection-closed'); // a dead client fails at once, never hangs
    await new Promise((r) => setTimeout(r, 50));
    expect(ended.map((e) => e.code)).toEqual(['connection-closed']);

    // While spookd is down a handle's call retries within its deadline, then times out.
    expect((await failure(h.get('k', { timeoutMs: 300 }))).code).toBe('timeout');

    // A restart on the same socket: the same handle's next call reconnects (it retries while spookd comes up).
    const call = h.get('k', { timeoutMs: 10_000 });
    await new Promise((r) => setTimeout(r, 200));
    await start();
    expect((await call).found).toBe(false);
    const w = await h.set('k3', 'v3', { timeoutMs: 1_500 }); // answered (committed or pending) before the call's deadline
    expect(w.register).toBe('config');
    h.close();
  });

  it('`spook watch` exits non-zero with the reason when spookd stops (never 0, never silent)', async () => {
    const root = join(dirname(fileURLToPath(import.meta.url)), '..');
    const cli = spawn(process.execPath, [join(root, 'bin', 'spook'), 'watch', 'config', '-s', socket], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let err = '';
    cli.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const exited = new Promise<number | null>((r) => cli.on('exit', (code) => r(code)));
    // Stop spookd once the CLI's watch is subscribed (the change feeds' rings subscribe from the start).
    const before = d!.subscribers.size;
    for (const t0 = Date.now(); d!.subscribers.size === before && Date.now() - t0 < 10_000;) await new Promise((r) => setTimeout(r, 20));
    expect(d!.subscribers.size).toBeGreaterThan(before);
    await stop();
    expect(await exited).toBe(1);
    expect(err).toMatch(/spookd closed the admin connection/);
    await start();
  }, 15_000);

  it('a long-lived connection holds nothing for answered requests, and at most MAX_REQUESTS_IN_PROGRESS awaiting (too-many-requests)', async () => {
    const c = await AdminClient.connect(socket);
    try {
      // Answered (committed, or pending at once): each registered a callback for the connection's end, then forgot it.
      for (let i = 0; i < 300; i++) await c.request('set', { register: 'config', key: `a${i}`, value: 'v', timeoutMs: 0 });
      const mine = (): { inProgress: number; cleanups: number } => {
        const c = d!.admin!.connections[0];
        return { inProgress: c.inProgress, cleanups: c.cleanups };
      };
      expect(d!.admin!.connections.map((x) => x.cleanups)).toEqual([0]);
      // Held domain writes (no majority: no outcome can come) up to the limit; one more is refused with its code, the others go on.
      const held = Array.from({ length: MAX_REQUESTS_IN_PROGRESS }, (_, i) =>
        c
          .request(
            'dpropose',
            { domain: 'wide', ops: [{ register: 'kv', op: 'set', key: `h${i}`, value: 'v' }], timeoutMs: 60_000 },
            { timeoutMs: 120_000 },
          )
          .catch((e: AdminError) => e),
      );
      for (const t0 = Date.now(); mine().inProgress < MAX_REQUESTS_IN_PROGRESS && Date.now() - t0 < 10_000;)
        await new Promise((r) => setTimeout(r, 20));
      expect(mine()).toEqual({ inProgress: MAX_REQUESTS_IN_PROGRESS, cleanups: MAX_REQUESTS_IN_PROGRESS });
      expect((await failure(c.request('get', { register: 'config', key: 'x' }))).code).toBe('too-many-requests');
      c.close();
      expect((await Promise.all(held)).every((e) => e instanceof AdminError && e.code === 'connection-closed')).toBe(true);
      // The connection's end ran and released every held callback.
      for (const t0 = Date.now(); d!.admin!.connections.length > 0 && Date.now() - t0 < 5_000;) await new Promise((r) => setTimeout(r, 20));
      expect(d!.admin!.connections).toEqual([]);
    } finally {
      c.close();
    }
  }, 30_000);

  it('unfinished request lines: the oldest give way (too-busy), not the largest nor the one whose chunk came last; connections are capped', async () => {
    const admin = d!.admin!;
    const saved = { ...admin.limits };
    Object.assign(admin.limits, { maxRequest: 64 * 1024, maxHeldTotal: 100 * 1024, maxConnections: 6 });
    const raw = (): Promise<{ sock: Socket; lines: string[]; closed: Promise<void> }> =>
      new Promise((resolve, reject) => {
        const sock = connect(socket);
        const lines: string[] = [];
        let buf = '';
        sock.on('data', (b) => {
          buf += b.toString();
          for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
            lines.push(buf.slice(0, nl));
            buf = buf.slice(nl + 1);
          }
        });
        const closed = new Promise<void>((r) => sock.on('close', () => r()));
        sock.once('connect', () => resolve({ sock, lines, closed }));
        sock.once('error', reject);
      });
    const open: Socket[] = [];
    try {
      // Four stalled lines of 20 KiB each (a client holding the budget in small pieces); then an honest client
      // sends a 50 KiB request in pieces. The oldest stalled lines give way, not the honest one, although it is the largest.
      const hogs = [];
      for (let i = 0; i < 4; i++) {
        const h = await raw();
        open.push(h.sock);
        h.sock.write('{"id":1,"cmd":"status","args":{"pad":"' + 'x'.repeat(20 * 1024));
        hogs.push(h);
        await new Promise((r) => setTimeout(r, 20));
      }
      await new Promise((r) => setTimeout(r, 100));
      const honest = await raw();
      open.push(honest.sock);
      // 50 KiB of JSON whitespace (an unknown `pad` field is refused since requests name only their command's arguments).
      const line = JSON.stringify({ id: 7, cmd: 'get', args: { register: 'config', key: 'k' } }).replace(/}$/, ' '.repeat(50 * 1024) + '}');
      honest.sock.write(line.slice(0, 10_000));
      await new Promise((r) => setTimeout(r, 50));
      honest.sock.write(line.slice(10_000));
      // 80 + 50 KiB is over the 100 KiB budget: the two oldest stalled lines go (60 + 50 is still over; 40 + 50 is not).
      await hogs[0].closed;
      await hogs[1].closed;
      honest.sock.write('\n');
      for (const h of hogs.slice(0, 2)) expect(JSON.parse(h.lines[0]).error.code).toBe('too-busy');
      for (const t0 = Date.now(); honest.lines.length === 0 && Date.now() - t0 < 5_000;) await new Promise((r) => setTimeout(r, 20));
      expect(JSON.parse(honest.lines[0])).toMatchObject({ id: 7, ok: true, result: { register: 'config' } });
      expect(hogs[2].lines).toEqual([]);
      expect(hogs[3].lines).toEqual([]);
      honest.sock.destroy();
      for (const h of hogs) h.sock.destroy();
      // The cap: six connections at most; the seventh is told why and closed.
      for (let i = 0; i < 6; i++) open.push((await raw()).sock);
      for (const t0 = Date.now(); admin.connections.length < 6 && Date.now() - t0 < 5_000;) await new Promise((r) => setTimeout(r, 20));
      const extra = await raw();
      await extra.closed;
      expect(JSON.parse(extra.lines[0]).error.code).toBe('too-busy');
    } finally {
      for (const s of open) s.destroy();
      Object.assign(admin.limits, saved);
    }
  });
});
