/**
 * A peer's endpoint looked up again (resolve.ts: a named peer without a session) while a reload
 * changes it: the lookup's answer, once it comes, must not undo what the reload set. Nothing
 * binds: the daemon is not started, the lookup is the test's, the ports are only numbers.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { pino } from 'pino';
import { Spookd } from '../drivers/daemon/spookd.js';
import { applyConfig } from '../drivers/daemon/reload.js';
import type { Lookup } from '../drivers/daemon/resolve.js';
import { configOf, inProcess, until } from './inproc.js';

const silent = pino({ level: 'silent' });
const dirs: string[] = [];
const daemons: Spookd[] = [];
afterEach(async () => {
  for (const d of daemons.splice(0)) await d.stop().catch(() => {});
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** A lookup answered when the test says, and how many were asked. */
function heldLookup(): { lookup: Lookup; asked: () => number; answer: (address: string) => void } {
  const waiting: ((a: string) => void)[] = [];
  let asked = 0;
  return {
    lookup: () =>
      new Promise<string>((resolve) => {
        asked++;
        waiting.push(resolve);
      }),
    asked: () => asked,
    answer: (address) => {
      for (const w of waiting.splice(0)) w(address);
    },
  };
}

describe('a reload while a named endpoint is looked up again', () => {
  it('the late answer of the lookup leaves the endpoint the reload set (a move to an address)', async () => {
    // Ports 1-3: never bound (the daemon is not started), only compared.
    const p = inProcess('spook-reload-dns', ['a', 'b'], 1);
    dirs.push(p.dir);
    const cfg = configOf(p, 'a', ['b']);
    cfg.peers[0].endpoint = '192.0.2.10:2'; // b.spook.test as resolved before the start
    const a = new Spookd(cfg, p.keys.a, silent);
    daemons.push(a);
    const held = heldLookup();
    a.watchNames(new Map([['b', { host: 'b.spook.test', port: 2 }]]), held.lookup, 20);
    await until('a lookup of b under way', () => held.asked() > 0);

    // The operator gives b an address of its own; the lookup started before still runs.
    const next = { ...cfg, peers: [{ ...cfg.peers[0], endpoint: '198.51.100.7:9' }] };
    const r = await applyConfig(a, next);
    expect(r.moved).toEqual(['b']);
    a.setNamed(new Map()); // as reloadFromFile does: b is no longer named
    expect(a.link('b').addr).toEqual({ address: '198.51.100.7', port: 9 });

    held.answer('192.0.2.99');
    await new Promise((r) => setTimeout(r, 100));
    expect(a.link('b').addr).toEqual({ address: '198.51.100.7', port: 9 });
    expect(a.cfg.peers[0].endpoint).toBe('198.51.100.7:9');
  });

  it('nor does it move a peer removed and added again meanwhile under the same name', async () => {
    const p = inProcess('spook-reload-dns', ['a', 'b', 'c'], 1);
    dirs.push(p.dir);
    const cfg = configOf(p, 'a', ['b']);
    cfg.peers[0].endpoint = '192.0.2.10:2';
    const a = new Spookd(cfg, p.keys.a, silent);
    daemons.push(a);
    const held = heldLookup();
    a.watchNames(new Map([['b', { host: 'b.spook.test', port: 2 }]]), held.lookup, 20);
    await until('a lookup of b under way', () => held.asked() > 0);

    // b rekeyed (another host now, c's key) at a fixed address.
    const next = { ...cfg, peers: [{ ...configOf(p, 'a', ['c']).peers[0], name: 'b', endpoint: '198.51.100.7:9' }] };
    const r = await applyConfig(a, next);
    expect(r.rekeyed).toEqual(['b']);
    a.setNamed(new Map());
    held.answer('192.0.2.99');
    await new Promise((r) => setTimeout(r, 100));
    expect(a.link('b').addr).toEqual({ address: '198.51.100.7', port: 9 });
  });
});
