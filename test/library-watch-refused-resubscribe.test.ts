/**
 * A library watch resubscribes by itself after its connection to spookd ends (client/feed.ts). A
 * resubscription refused for a transient reason (spookd at its admin connection limit: `too-busy`;
 * at its feed limit: `too-many-watchers`) is retried with backoff as a lost connection is, not the
 * watch's end: once spookd has room again, the changes come, from the last delivered version.
 *
 * Two spookd in this process, on free loopback ports the kernel gives.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { Spookd } from '../drivers/daemon/spookd.js';
import { PairState } from '../core/pair/lifecycle.js';
import { openRegister } from '../client/register.js';
import type { SpookError } from '../client/admin-client.js';
import type { Change } from '../client/feed.js';
import { configOf, inProcess, logOf, until } from './inproc.js';
import { freePort } from './admin-solo.js';
import { FEED_LIMITS } from '../drivers/admin/feed.js';

const lab = inProcess('spook-watch-refused', ['a', 'b'], 0);
const d: Record<string, Spookd> = {};
const sock = (n: string): string => join(lab.dir, `${n}.sock`);
const serverSockets = (s: Spookd): Socket[] => [...(s.admin as unknown as { clients: Map<Socket, unknown> }).clients.keys()];

beforeAll(async () => {
  lab.port.a = await freePort();
  lab.port.b = await freePort();
  d.a = new Spookd(configOf(lab, 'a', ['b']), lab.keys.a, logOf(lab, 'a'));
  d.b = new Spookd(configOf(lab, 'b', ['a']), lab.keys.b, logOf(lab, 'b'));
  await Promise.all([d.a.start(), d.b.start()]);
  await until('a-b entangled', () => d.a.link('b').pair.state === PairState.ENTANGLED);
}, 30_000);

afterAll(async () => {
  await Promise.all(Object.values(d).map((s) => s.stop()));
  rmSync(lab.dir, { recursive: true, force: true });
});

describe('a watch whose resubscription spookd refuses for now', { timeout: 30_000 }, () => {
  it('keeps watching (too-busy at the reconnect is retried), and delivers what committed meanwhile', async () => {
    const reg = await openRegister('config', { socket: sock('a'), peer: 'b' });
    const seen: Change[] = [];
    const ends: SpookError[] = [];
    const w = await reg.watch('', { onChange: (c) => void seen.push(c), onEnd: (e) => void ends.push(e) });
    expect((await reg.set('k1', 'v1')).verdict).toBe('committed');
    await until('k1 delivered', () => seen.some((c) => c.key === 'k1'));

    // spookd at its connection limit: every new admin connection is answered too-busy; then the watch's connection ends.
    const limits = d.a.admin!.limits;
    const max = limits.maxConnections;
    limits.maxConnections = 0;
    for (const s of serverSockets(d.a)) s.destroy();
    // The watch tries again at least once meanwhile (50 ms, 100 ms, 200 ms, ...).
    await new Promise((r) => setTimeout(r, 400));
    limits.maxConnections = max;

    expect((await reg.set('k2', 'v2')).verdict).toBe('committed');
    await until('k2 delivered, or the watch ended', () => seen.some((c) => c.key === 'k2') || ends.length > 0, 10_000).catch(() => {});
    expect(ends.map((e) => `${e.code}: ${e.message}`)).toEqual([]);
    expect(seen.map((c) => c.key)).toEqual(['k1', 'k2']);
    expect(w.resubscribes).toBeGreaterThanOrEqual(1);
    w.close();
    reg.close();
  });

  it('keeps watching when spookd has all the feeds it allows at the reconnect (too-many-watchers is retried)', async () => {
    const reg = await openRegister('config', { socket: sock('a'), peer: 'b' });
    const seen: Change[] = [];
    const ends: SpookError[] = [];
    const w = await reg.watch('', { onChange: (c) => void seen.push(c), onEnd: (e) => void ends.push(e) });
    const total = FEED_LIMITS.total;
    FEED_LIMITS.total = 0;
    try {
      for (const s of serverSockets(d.a)) s.destroy();
      await new Promise((r) => setTimeout(r, 400));
    } finally {
      FEED_LIMITS.total = total;
    }
    expect((await reg.set('k3', 'v3')).verdict).toBe('committed');
    await until('k3 delivered, or the watch ended', () => seen.some((c) => c.key === 'k3') || ends.length > 0, 10_000).catch(() => {});
    expect(ends.map((e) => `${e.code}: ${e.message}`)).toEqual([]);
    expect(seen.map((c) => c.key)).toEqual(['k3']);
    w.close();
    reg.close();
  });
});
