/**
 * Wrappers and wrap.allow applied by a reload (issue 18; drivers/daemon/reload.ts): two spookd in
 * process on loopback, a carrying b's connections to a real TCP server, with a stand-in for the BPF
 * hooks (it says where an intercepted client meant to go, and records the ports it is told to
 * intercept). A wrapper added by a reload leaves a live wrapped connection alone; a removed one
 * resets its connections and its port is no longer intercepted.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { pino } from 'pino';
import { Spookd } from '../drivers/daemon/spookd.js';
import { applyConfig } from '../drivers/daemon/reload.js';
import type { Interceptor } from '../drivers/wrap/manager.js';
import { wrapHandlers } from '../drivers/admin/wrap.js';
import type { Call } from '../drivers/admin/handlers.js';
import type { SpookdConfig } from '../drivers/daemon/config.js';
import { configOf, inProcess, until } from './inproc.js';
import { portBase } from './ports.js';

const p = inProcess('spook-reload-wrap', ['a', 'b'], portBase('reload-wrap.test.ts'));
const silent = pino({ level: 'silent' });
const all: Spookd[] = [];
const servers: Server[] = [];
const clients: Socket[] = [];
afterAll(async () => {
  for (const c of clients) c.destroy();
  for (const d of all) await d.stop().catch(() => {});
  for (const s of servers) s.close();
  rmSync(p.dir, { recursive: true, force: true });
});

/** An echo server on a free port of 127.0.0.1. */
async function echo(): Promise<number> {
  const s = createServer((c) => {
    c.on('data', (d) => c.write(d));
    c.on('error', () => {});
  });
  servers.push(s);
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  return (s.address() as AddressInfo).port;
}

describe('reload: wrappers and wrap.allow', () => {
  it('adds, updates and removes wrappers; a live connection on an unchanged wrapper survives', async () => {
    const [x, y] = [await echo(), await echo()];
    const range = `127.0.0.1:${Math.min(x, y)}-${Math.max(x, y)}`;
    /** Where the next intercepted client meant to go, and every port list the hooks were told. */
    let dst = x;
    const told: number[][] = [];
    const stand: Interceptor = {
      setPorts: (tcp) => void told.push([...tcp].sort((m, n) => m - n)),
      originalDst: () => ({ family: 4, address: '127.0.0.1', port: dst }),
      stats: () => ({}),
      close: () => {},
    };
    const wrapper = (port: number, extra: object = {}): SpookdConfig['wrap']['wrappers'][number] => ({
      protocol: 'tcp',
      port,
      peer: 'b',
      delta: false,
      whenDown: 'hold',
      ...extra,
    });
    const cfgA = configOf(p, 'a', ['b'], { wrap: { wrappers: [wrapper(x)] } });
    const cfgB = configOf(p, 'b', ['a'], { wrap: { interception: 'off' } });
    const a = new Spookd(cfgA, p.keys.a, silent, undefined, () => stand);
    const b = new Spookd(cfgB, p.keys.b, silent);
    all.push(a, b);
    await Promise.all([a.start(), b.start()]);
    const intercept = Number(String(a.wraps.stats().intercept).split(':')[1]);
    await until('the carrier is up', () => a.wraps.stats().peers[0]?.carrier === 'up');

    // b allows nothing yet: the dial is refused and the client's connection ends.
    const early = connect(intercept, '127.0.0.1');
    early.on('error', () => {});
    await until('the refused connection ends', () => early.destroyed && early.closed);
    expect(b.wraps.policyView()[0].refused).toBe(1);

    // b's reload allows the server: the next connection is carried.
    const rb = await applyConfig(b, { ...cfgB, wrap: { ...cfgB.wrap, allow: [{ peer: 'a', to: range, protocol: 'tcp' }] } });
    expect(rb.allowChanged).toBe(true);
    expect(b.wraps.policyView()[0].allow).toEqual([{ to: range, protocol: 'tcp' }]);
    const c = connect(intercept, '127.0.0.1');
    clients.push(c);
    let got = '';
    let closed = false;
    c.on('data', (d) => (got += d));
    c.on('error', () => {});
    c.on('close', () => (closed = true));
    c.write('one.');
    await until('the echo of one', () => got === 'one.');

    // A wrapper added: the live connection on the unchanged one is untouched.
    const r1 = await applyConfig(a, { ...cfgA, wrap: { ...cfgA.wrap, wrappers: [wrapper(x), wrapper(y)] } });
    expect(r1.wrappers).toEqual({ added: [`tcp/${y}`], removed: [], reset: [], updated: [] });
    expect(told.at(-1)).toEqual([x, y].sort((m, n) => m - n));
    c.write('two.');
    await until('the echo of two', () => got === 'one.two.');

    // Its hold changed: in place, the connection still carried.
    const r2 = await applyConfig(a, { ...cfgA, wrap: { ...cfgA.wrap, wrappers: [wrapper(x, { hold: 30_000 }), wrapper(y)] } });
    expect(r2.wrappers).toEqual({ added: [], removed: [], reset: [], updated: [`tcp/${x}`] });
    expect(a.wraps.list().find((w) => w.port === x)!.holdMs).toBe(30_000);
    c.write('three.');
    await until('the echo of three', () => got === 'one.two.three.');
    expect(closed).toBe(false);

    // Removed: its connection is reset, its port is no longer intercepted.
    const r3 = await applyConfig(a, { ...cfgA, wrap: { ...cfgA.wrap, wrappers: [wrapper(y)] } });
    expect(r3.wrappers).toEqual({ added: [], removed: [`tcp/${x}`], reset: [], updated: [] });
    expect(told.at(-1)).toEqual([y]);
    await until('the connection of the removed wrapper ends', () => closed);
    expect(a.cfg.wrap.wrappers.map((w) => w.port)).toEqual([y]);
    const refusedBefore = a.wraps.stats().refused['port-not-wrapped'] ?? 0;
    const late = connect(intercept, '127.0.0.1');
    late.on('error', () => {});
    await until('the connection to the removed wrapper ends', () => late.destroyed && late.closed);
    expect(a.wraps.stats().refused['port-not-wrapped']).toBe(refusedBefore + 1);

    // The other wrapper carries as before.
    dst = y;
    const d2 = connect(intercept, '127.0.0.1');
    clients.push(d2);
    let got2 = '';
    d2.on('data', (d) => (got2 += d));
    d2.on('error', () => {}); // reset below (ECONNRESET): expected, never an unhandled error of the run
    d2.write('four.');
    await until('the echo through the other wrapper', () => got2 === 'four.');

    // Its protocol changed: removed and added again, its connection reset (and said so).
    let reset = false;
    d2.on('close', () => (reset = true));
    const r4 = await applyConfig(a, { ...cfgA, wrap: { ...cfgA.wrap, wrappers: [wrapper(y, { protocol: 'http' })] } });
    expect(r4.wrappers).toEqual({ added: [], removed: [], reset: [`tcp/${y}`], updated: [] });
    expect(a.wraps.list().map((w) => [w.port, w.protocol])).toEqual([[y, 'http']]);
    await until('the connection of the reset wrapper ends', () => reset);

    // A wrapper added at run time (`spook wrap add`) is part of the running configuration: a reload
    // of a file without it removes it (the file is the truth, as for `wg syncconf`).
    const call = {} as Call;
    wrapHandlers(a)['wrap-add']({ protocol: 'tcp', port: x, peer: 'b' }, call);
    expect(a.cfg.wrap.wrappers.map((w) => w.port)).toEqual([y, x]);
    const r45 = await applyConfig(a, { ...cfgA, wrap: { ...cfgA.wrap, wrappers: [wrapper(y, { protocol: 'http' })] } });
    expect(r45.wrappers).toEqual({ added: [], removed: [`tcp/${x}`], reset: [], updated: [] });
    wrapHandlers(a)['wrap-remove']({ port: y }, call);
    expect(a.cfg.wrap.wrappers).toEqual([]);
    const r46 = await applyConfig(a, { ...cfgA, wrap: { ...cfgA.wrap, wrappers: [wrapper(y, { protocol: 'http' })] } });
    expect(r46.wrappers).toEqual({ added: [`tcp/${y}`], removed: [], reset: [], updated: [] });

    // The peer removed with its wrapper in one reload: the wrapper goes first, then the peer.
    const r5 = await applyConfig(a, { ...cfgA, peers: [], wrap: { ...cfgA.wrap, wrappers: [] } });
    expect([r5.removed, r5.wrappers.removed, r5.refused]).toEqual([['b'], [`tcp/${y}`], []]);
    expect([a.cfg.peers, a.cfg.wrap.wrappers, [...a.links.keys()]]).toEqual([[], [], []]);
  }, 30_000);
});
