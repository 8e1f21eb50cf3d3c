/**
 * Streams open on a peer that a reload removes (issue 18), in process over the real admin socket:
 * a change feed on its register, `watch` and `events` naming it, through the library, the raw
 * client and `spook watch`, each end with `peer-removed` (never open and silent for ever); a watch
 * of another peer, and one of every peer, keep receiving events.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { Spookd } from '../drivers/daemon/spookd.js';
import { applyConfig } from '../drivers/daemon/reload.js';
import { feedsOf } from '../drivers/admin/read.js';
import { AdminClient, type SpookError } from '../client/admin-client.js';
import { openRegister } from '../client/register.js';
import type { CollapseEvent } from '../client/protocol.js';
import { configOf, inProcess, until } from './inproc.js';
import { portBase } from './ports.js';

const p = inProcess('spook-reload-streams', ['f', 'x', 'y'], portBase('reload-streams.test.ts'));
const silent = pino({ level: 'silent' });
const all: Spookd[] = [];
afterAll(async () => {
  for (const d of all) await d.stop().catch(() => {});
  rmSync(p.dir, { recursive: true, force: true });
});

describe('reload: streams on a removed peer', () => {
  it('feed, watch and events on it end with peer-removed (spook watch -p, spook events -p exit 1); streams of other peers go on', async () => {
    const cfgF = configOf(p, 'f', ['x', 'y']);
    const f = new Spookd(cfgF, p.keys.f, silent);
    const y = new Spookd(configOf(p, 'y', ['f']), p.keys.y, silent);
    all.push(f, y);
    // x never runs: its pair at f stays FORMING; what is watched there is the streams, not its events.
    await Promise.all([f.start(), y.start()]);
    await until('f-y entangled', () => f.link('y').pair.state === 'ENTANGLED' && y.link('f').pair.state === 'ENTANGLED');
    const socket = cfgF.adminSocket;
    const feeds = feedsOf.get(f)!;
    const before = f.removals.size;

    const ends: Record<string, SpookError> = {};
    const endAs = (name: string) => (e: SpookError) => void (ends[name] = e);
    // The library: a change feed (watch) and collapses (onCollapse) of x's register; collapses of y's.
    const hx = await openRegister('config', { peer: 'x', socket });
    const hy = await openRegister('config', { peer: 'y', socket });
    const watcher = await hx.watch('', { onChange: () => {}, onEnd: endAs('library feed') });
    await hx.onCollapse(() => {}, { onEnd: endAs('library watch') });
    const ofY: CollapseEvent[] = [];
    await hy.onCollapse((ev) => ofY.push(ev), { onEnd: endAs('library watch of y') });
    // The raw client, one connection for all: events and a feed naming x, a watch of every peer.
    const raw = await AdminClient.connect(socket);
    await raw.stream('events', { peer: 'x' }, () => {}, { onEnd: endAs('raw events') });
    await raw.stream('feed', { peer: 'x', register: 'config' }, () => {}, { onEnd: endAs('raw feed') });
    const ofAll: CollapseEvent[] = [];
    await raw.stream('watch', {}, (ev) => ofAll.push(ev), { onEnd: endAs('raw watch of every peer') });
    // `spook watch -p x config` and `spook events -p x`, once subscribed.
    const subscribers = f.subscribers.size;
    const root = join(dirname(fileURLToPath(import.meta.url)), '..');
    const spook = (...args: string[]) => {
      const cli = spawn(process.execPath, [join(root, 'bin', 'spook'), ...args, '-s', socket], { stdio: ['ignore', 'pipe', 'pipe'] });
      const out = { cli, err: '', exited: new Promise<number | null>((r) => cli.on('exit', (code) => r(code))) };
      cli.stderr.on('data', (b: Buffer) => (out.err += b.toString()));
      return out;
    };
    const cliWatch = spook('watch', '-p', 'x', 'config');
    const cliEvents = spook('events', '-p', 'x');
    try {
      await until('the CLI streams subscribed', () => f.subscribers.size === subscribers + 2, 10_000);
      expect(feeds.stats.open).toBe(2);

      const r = await applyConfig(f, { ...cfgF, peers: cfgF.peers.filter((q) => q.name !== 'x') });
      expect(r.removed).toEqual(['x']);
      const onX = ['library feed', 'library watch', 'raw events', 'raw feed'];
      await until('every stream on x ended', () => onX.every((n) => ends[n] !== undefined), 5_000);
      for (const n of onX) {
        expect([n, ends[n].code]).toEqual([n, 'peer-removed']);
        expect(ends[n].message).toMatch(/peer x was removed from the configuration \(reload\)/);
      }
      expect(await cliWatch.exited).toBe(1);
      expect(cliWatch.err).toMatch(
        /^spook: peer-removed: peer x was removed from the configuration \(reload\); the watch of peer x has ended\n$/,
      );
      expect(await cliEvents.exited).toBe(1);
      expect(cliEvents.err).toMatch(
        /^spook: peer-removed: peer x was removed from the configuration \(reload\); the events stream of peer x has ended\n$/,
      );
      // Nothing of them is left at spookd: feeds closed, their subscriptions and removal listeners gone.
      expect(watcher.resubscribes).toBe(0);
      expect(feeds.stats.open).toBe(0);
      // The CLI's 2 streams and 2 of the 4 watch/events before them were on x; of the 7 streams naming a peer, y's watch is left.
      expect(f.subscribers.size).toBe(subscribers - 2);
      expect(f.removals.size).toBe(before + 1);

      // The streams not bound to x: the connection that carried two of x's is still open, and y's collapses still arrive.
      expect(raw.open).toBe(true);
      expect((await raw.request('pairs')).map((q) => q.peer)).toEqual(['y']);
      const w = await hy.set('after', 'v', { timeoutMs: 10_000 });
      expect(w.verdict).toBe('committed');
      await until('y collapse seen by both watches', () => ofY.some((e) => e.version === w.version) && ofAll.some((e) => e.peer === 'y'));
      expect(Object.keys(ends).sort()).toEqual([...onX].sort());
    } finally {
      cliWatch.cli.kill();
      cliEvents.cli.kill();
      raw.close();
      hx.close();
      hy.close();
    }
  }, 30_000);
});
