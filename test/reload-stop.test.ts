/**
 * A reload and a stop at once (issue 18, review): stop() must not leave anything a reload still
 * applies behind it (a store opened after the stores were closed, a wrapper's hooks opened after
 * the wrappers stopped), and a reload asked for while stopping changes nothing.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { pino } from 'pino';
import { Spookd } from '../drivers/daemon/spookd.js';
import { DiskStore } from '../drivers/store/store.js';
import type { Interceptor } from '../drivers/wrap/manager.js';
import { wrapHandlers } from '../drivers/admin/wrap.js';
import type { Call } from '../drivers/admin/handlers.js';
import type { AdminFault } from '../drivers/admin/args.js';
import { configOf, inProcess } from './inproc.js';
import { portBase } from './ports.js';

const p = inProcess('spook-reload-stop', ['a', 'b', 'c'], portBase('reload-stop.test.ts'));
const silent = pino({ level: 'silent' });
afterAll(() => rmSync(p.dir, { recursive: true, force: true }));

const file = join(p.dir, 'a.yaml');

describe('reload during stop()', () => {
  /** a, peering with b; its file adds c and a wrapper to c. Its stores and BPF hooks are counted. */
  async function host(): Promise<{ a: Spookd; open: () => string[]; hooks: () => number }> {
    const stores = new Map<string, DiskStore>();
    let hooksOpen = 0;
    const stand = (): Interceptor => {
      hooksOpen++;
      return { setPorts: () => {}, originalDst: () => undefined, stats: () => ({}), close: () => void hooksOpen-- };
    };
    const a = new Spookd(
      configOf(p, 'a', ['b']),
      p.keys.a,
      silent,
      (name, dir, fsync, onFlushFailed) => {
        const s = new DiskStore(dir, fsync, undefined, undefined, onFlushFailed);
        stores.set(name, s);
        return s;
      },
      stand,
    );
    await a.start();
    writeFileSync(file, stringify(configOf(p, 'a', ['b', 'c'], { wrap: { wrappers: [{ protocol: 'tcp', port: 5432, peer: 'c' }] } })));
    a.configPath = file;
    const open = () => [...stores].filter(([, s]) => !(s as unknown as { closed: boolean }).closed).map(([n]) => n);
    return { a, open, hooks: () => hooksOpen };
  }

  it('a reload under way when stop() begins: stop() waits for it, then closes what it added (stores, hooks)', async () => {
    const { a, open, hooks } = await host();
    const reloaded = a.reload();
    await a.stop();
    expect((await reloaded).added).toEqual(['c']);
    expect(open()).toEqual([]);
    expect(hooks()).toBe(0);
  });

  it('a reload asked for once stop() began, or after it, is refused and opens nothing', async () => {
    const { a, open, hooks } = await host();
    const stopped = a.stop();
    await expect(a.reload()).rejects.toThrow(/stopping/);
    await stopped;
    await expect(a.reload()).rejects.toThrow(/stopping/);
    expect(open()).toEqual([]);
    expect(hooks()).toBe(0);
  });
});

describe('wrap-add and wrap-remove while a reload runs', () => {
  it('are refused (reload-in-progress): the running configuration a reload rebuilds would not list them', async () => {
    const stand = (): Interceptor => ({ setPorts: () => {}, originalDst: () => undefined, stats: () => ({}), close: () => {} });
    const a = new Spookd(configOf(p, 'a', ['b']), p.keys.a, silent, undefined, stand);
    await a.start();
    try {
      writeFileSync(file, stringify(configOf(p, 'a', ['b'], { registers: [{ name: 'config', kind: 'map', maxKeys: 9 }] })));
      a.configPath = file;
      const w = wrapHandlers(a);
      const call = {} as Call;
      const reloaded = a.reload();
      const code = (f: () => unknown): string => {
        try {
          f();
        } catch (e) {
          return (e as AdminFault).code;
        }
        return 'done';
      };
      expect(code(() => w['wrap-add']({ protocol: 'tcp', port: 5433, peer: 'b' }, call))).toBe('reload-in-progress');
      expect(code(() => w['wrap-remove']({ port: 5433 }, call))).toBe('reload-in-progress');
      await reloaded;
      // Once it is done they run, and the running configuration lists what runs.
      expect(code(() => w['wrap-add']({ protocol: 'tcp', port: 5433, peer: 'b' }, call))).toBe('done');
      expect(a.cfg.wrap.wrappers.map((x) => x.port)).toEqual([5433]);
      expect([...a.wraps.wrappers.values()].map((x) => x.port)).toEqual([5433]);
    } finally {
      await a.stop();
    }
  });
});
