import { afterAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { pino } from 'pino';
import { Spookd } from '../drivers/daemon/spookd.js';
import { configOf, has, inProcess, until, write } from './inproc.js';
import { portBase } from './ports.js';
import { applyConfig } from '../drivers/daemon/reload.js';

/** Peers added and removed while spookd runs (issue 18's reload): the other pairs are not touched. */
const p = inProcess('spook-peers-live', ['a', 'b', 'c'], portBase('spookd-peers-live.test.ts'));
const silent = pino({ level: 'silent' });
const all: Spookd[] = [];
afterAll(async () => {
  for (const d of all) await d.stop().catch(() => {});
  rmSync(p.dir, { recursive: true, force: true });
});

describe('spookd: peers added and removed at run time', () => {
  it('adds c while a-b stays entangled on its session, carries writes to c, then removes c', async () => {
    const cfgA = configOf(p, 'a', ['b', 'c']);
    const cPeer = cfgA.peers.find((x) => x.name === 'c')!;
    const a = new Spookd({ ...cfgA, peers: cfgA.peers.filter((x) => x.name === 'b') }, p.keys.a, silent);
    const b = new Spookd(configOf(p, 'b', ['a']), p.keys.b, silent);
    const c = new Spookd(configOf(p, 'c', ['a']), p.keys.c, silent);
    all.push(a, b, c);
    await Promise.all([a.start(), b.start(), c.start()]);
    await until('a-b entangled', () => a.link('b').pair.state === 'ENTANGLED');
    const ab = a.link('b').session!.localIndex;
    expect(a.links.has('c')).toBe(false);

    a.addPeer(cPeer);
    await until('a-c entangled', () => a.link('c').pair.state === 'ENTANGLED' && c.link('a').pair.state === 'ENTANGLED', 20_000);
    write(a, 'c', 'to-c');
    await until('the write reached c', () => has(c, 'a', 'to-c'));
    expect(a.link('b').session!.localIndex).toBe(ab);
    expect(a.link('b').pair.state).toBe('ENTANGLED');
    expect(() => a.addPeer(cPeer)).toThrow(/already configured/);

    expect(a.wraps.peerCounters().map((x) => x.peer)).toEqual(['b', 'c']);
    await a.removePeer('c');
    expect(a.links.has('c')).toBe(false);
    expect(a.table.peer('c')).toBeUndefined();
    // The wrappers' carrier forgets it too: a carrier from its key is refused.
    expect(a.wraps.peerCounters().map((x) => x.peer)).toEqual(['b']);
    // c was told a went away; b's pair carries on.
    await until('c sees a gone', () => c.link('a').pair.state !== 'ENTANGLED', 20_000);
    write(a, 'b', 'to-b');
    await until('the write reached b', () => has(b, 'a', 'to-b'));
    expect(a.link('b').session!.localIndex).toBe(ab);

    // Added back, c resumes from its state on disk: the key written before is still there.
    a.addPeer(cPeer);
    await until('a-c entangled again', () => a.link('c').pair.state === 'ENTANGLED', 20_000);
    expect(has(a, 'c', 'to-c')).toBe(true);
  }, 60_000);

  it('applyConfig applies a configuration diff: peers removed and added, other changes named for a restart', async () => {
    const a = all[0];
    const running = configOf(p, 'a', ['b', 'c']);
    a.cfg = running; // what runs now (the first test added c by hand)
    // The next configuration drops b, keeps c, and changes the listen address and a timing (a restart's business).
    const next = {
      ...running,
      listen: `127.0.0.1:${p.port.a + 50}`,
      timing: { ...running.timing, keepaliveMs: 200 },
      peers: running.peers.filter((x) => x.name === 'c'),
    };
    const r = await applyConfig(a, next);
    expect(r).toMatchObject({
      added: [],
      removed: ['b'],
      rekeyed: [],
      moved: [],
      needRestart: ['listen', 'timing.keepaliveMs'],
      refused: [],
    });
    expect([...a.links.keys()]).toEqual(['c']);
    expect(a.link('c').pair.state).toBe('ENTANGLED');
    // The running configuration is spookd's: its peers are the file's, its listen address still the old one.
    expect(a.cfg.peers.map((x) => x.name)).toEqual(['c']);
    expect(a.cfg.listen).toBe(running.listen);
    const back = await applyConfig(a, running);
    expect(back.added).toEqual(['b']);
    expect(back.needRestart).toEqual([]);
    await until('a-b entangled again', () => a.link('b').pair.state === 'ENTANGLED', 20_000);
  }, 60_000);
});
