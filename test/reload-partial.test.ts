/**
 * A reload that fails partway (issue 18, review): what it applied before the failure stays
 * applied and is reported, the failed change is named as refused, and the running configuration
 * (Spookd.cfg, what the next reload compares the file with) is what runs: never the old one.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { pino } from 'pino';
import { Spookd } from '../drivers/daemon/spookd.js';
import { applyConfig } from '../drivers/daemon/reload.js';
import { PairRings } from '../drivers/admin/feed.js';
import { configOf, inProcess } from './inproc.js';
import { portBase } from './ports.js';

const p = inProcess('spook-reload-partial', ['a', 'b', 'c'], portBase('reload-partial.test.ts'));
const silent = pino({ level: 'silent' });
const all: Spookd[] = [];
afterAll(async () => {
  for (const d of all) await d.stop().catch(() => {});
  rmSync(p.dir, { recursive: true, force: true });
});

describe('a reload that fails partway', () => {
  it('a peer whose change throws is refused; the rest applies; the running configuration is what runs', async () => {
    const cfg = configOf(p, 'a', ['b', 'c']);
    const a = new Spookd(cfg, p.keys.a, silent);
    all.push(a);
    await a.start();
    // b moves (and its move fails), c goes, the register's maxKeys changes.
    const next = {
      ...configOf(p, 'a', ['b']),
      registers: cfg.registers.map((r) => ({ ...r, maxKeys: 5 })),
    };
    next.peers = next.peers.map((x) => ({ ...x, endpoint: '127.0.0.1:1' }));
    a.moveEndpoint = () => {
      throw new Error('the endpoint could not be set');
    };
    const r = await applyConfig(a, next);
    expect(r.removed).toEqual(['c']);
    expect(r.moved).toEqual([]);
    expect(r.refused).toEqual([{ peer: 'b', reason: 'the endpoint could not be set' }]);
    expect(r.limits.map((l) => l.register)).toEqual(['config']);
    expect([...a.links.keys()]).toEqual(['b']);
    expect(a.cfg.peers).toEqual([cfg.peers[0]]); // b as it runs: its old endpoint
    expect(a.cfg.registers[0].maxKeys).toBe(5);
  });
});

describe('a quota the pairs cannot take', () => {
  it('is refused for the register, never fences the pairs', async () => {
    const a = all[0];
    const before = a.cfg.registers[0];
    const r = await applyConfig(a, { ...a.cfg, registers: [{ ...before, maxValueBytes: 2 ** 40 }] });
    expect(r.refused).toEqual([{ register: 'config', reason: expect.stringMatching(/maxValueBytes/) }]);
    expect(r.limits).toEqual([]);
    expect([...a.links.values()].map((l) => l.fenced)).toEqual([undefined]);
    expect(a.cfg.registers[0]).toEqual(before);
  });
});

describe('a removed peer is let go', () => {
  it("the change feeds' rings of its registers are dropped with it (they held its pair, whole)", async () => {
    const cfg = configOf(p, 'c', ['a']);
    const c = new Spookd(cfg, p.keys.c, silent);
    all.push(c);
    await c.start();
    const rings = new PairRings(c);
    rings.ring(c.link('a'), 'config');
    expect(rings.links).toBe(1);
    const r = await applyConfig(c, { ...cfg, peers: [] });
    expect(r.removed).toEqual(['a']);
    expect(rings.links).toBe(0);
  });
});
