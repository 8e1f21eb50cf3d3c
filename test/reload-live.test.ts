/**
 * A reload applied to running spookd (issue 18; drivers/daemon/reload.ts), in process on loopback:
 * pair registers' quotas changed without touching their pairs' data, and a write pending on a peer
 * the reload removes ending with `peer-removed`.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { reloadHandlers } from '../drivers/admin/reload.js';
import type { Call } from '../drivers/admin/handlers.js';
import { AdminFault } from '../drivers/admin/args.js';
import { pino } from 'pino';
import { Spookd } from '../drivers/daemon/spookd.js';
import { applyConfig } from '../drivers/daemon/reload.js';
import { AdminClient, SpookError } from '../client/admin-client.js';
import type { SpookEvent } from '../core/pair/events.js';
import type { SpookdConfig } from '../drivers/daemon/config.js';
import { configOf, has, inProcess, until, write } from './inproc.js';
import { portBase } from './ports.js';

const p = inProcess('spook-reload-live', ['a', 'b', 'x', 'y', 'z'], portBase('reload-live.test.ts'));
const silent = pino({ level: 'silent' });
const all: Spookd[] = [];
afterAll(async () => {
  for (const d of all) await d.stop().catch(() => {});
  rmSync(p.dir, { recursive: true, force: true });
});

/** `cfg` with register `config`'s limits changed. */
const withLimits = (cfg: SpookdConfig, limits: Partial<Pick<SpookdConfig['registers'][number], 'maxKeys' | 'maxBytes'>>): SpookdConfig => ({
  ...cfg,
  registers: cfg.registers.map((r) => ({ ...r, ...limits })),
});

/** Write `key` from `from` to `peer` and wait for its outcome. */
async function outcome(from: Spookd, peer: string, key: string): Promise<SpookEvent & { type: 'outcome' }> {
  const link = from.link(peer);
  let got: (SpookEvent & { type: 'outcome' }) | undefined;
  const sub = (l: unknown, ev: SpookEvent): void => {
    if (l === link && ev.type === 'outcome' && ev.origin === id.origin && ev.seq === id.seq) got = ev;
  };
  from.subscribers.add(sub);
  const id = write(from, peer, key);
  try {
    await until(`the outcome of ${key}`, () => got !== undefined);
  } finally {
    from.subscribers.delete(sub);
  }
  return got!;
}

describe('reload: pair registers limits', () => {
  it('a lowered maxKeys refuses the next new key, keeps every key held; the pair is decoherent only while the two ends differ', async () => {
    const cfgA = configOf(p, 'a', ['b']);
    const cfgB = configOf(p, 'b', ['a']);
    const a = new Spookd(cfgA, p.keys.a, silent);
    const b = new Spookd(cfgB, p.keys.b, silent);
    all.push(a, b);
    await Promise.all([a.start(), b.start()]);
    await until('a-b entangled', () => a.link('b').pair.state === 'ENTANGLED' && b.link('a').pair.state === 'ENTANGLED');
    for (const k of ['k1', 'k2', 'k3']) expect((await outcome(a, 'b', k)).verdict).toBe('committed');

    // a first: it holds 3 keys, over the new limit of 2; nothing is dropped.
    const r = await applyConfig(a, withLimits(cfgA, { maxKeys: 2 }));
    expect(r.limits).toEqual([{ register: 'config', changed: ['maxKeys'], over: [{ peer: 'b', keys: 3, bytes: expect.any(Number) }] }]);
    expect(r.needRestart).toEqual([]);
    expect(a.cfg.registers[0].maxKeys).toBe(2);
    // b still has the old limit: both ends find the registers differ (the manifest, §6.3).
    expect(a.link('b').pair.registerMismatch).toEqual([{ register: 'config', how: 'limit', limit: 'maxKeys', here: 2, peer: 1_000_000 }]);
    await until('b sees the mismatch', () => b.link('a').pair.registerMismatch !== undefined);
    expect(a.link('b').pair.state).toBe('DECOHERENT');

    // b too: the pair re-entangles, every key still there.
    await applyConfig(b, withLimits(cfgB, { maxKeys: 2 }));
    await until('a-b entangled again', () => a.link('b').pair.state === 'ENTANGLED' && b.link('a').pair.state === 'ENTANGLED');
    const refused = await outcome(a, 'b', 'k4');
    expect([refused.verdict, refused.verdict === 'rejected' && refused.reason]).toEqual(['rejected', 'quota-exceeded']);
    for (const k of ['k1', 'k2', 'k3']) expect([has(a, 'b', k), has(b, 'a', k)]).toEqual([true, true]);
    expect(has(b, 'a', 'k4')).toBe(false);

    // Raised on both: the same key commits.
    await applyConfig(a, withLimits(cfgA, { maxKeys: 10 }));
    await applyConfig(b, withLimits(cfgB, { maxKeys: 10 }));
    await until('a-b entangled at 10', () => a.link('b').pair.state === 'ENTANGLED' && b.link('a').pair.state === 'ENTANGLED');
    expect((await outcome(a, 'b', 'k4')).verdict).toBe('committed');
    await until('k4 at b', () => has(b, 'a', 'k4'));
  }, 30_000);

  it('adding a register or changing its kind needs a restart, named by field path; nothing applied', async () => {
    const a = all[0];
    const before = a.cfg;
    const next: SpookdConfig = {
      ...before,
      registers: [
        { ...before.registers[0], kind: 'stream', maxBytes: 4096 },
        { ...before.registers[0], name: 'extra' },
      ],
      wrap: { ...before.wrap, intercept: '127.0.0.1:1' },
    };
    const r = await applyConfig(a, next);
    expect(r.needRestart).toEqual(['registers[config].kind', 'registers[extra]', 'wrap.intercept']);
    // A register whose kind changes keeps its old limits too: it is a restart's business as a whole.
    expect(r.limits).toEqual([]);
    expect(a.cfg.registers).toEqual(before.registers);
    expect(a.cfg.wrap.intercept).toBe(before.wrap.intercept);
  });
});

describe('reload: what it refuses', () => {
  it('a peer a domain names stays as it was (refused, still running, still in the running configuration); the domain change is named', async () => {
    const dom = (members: string[]) => [{ name: 'main', members, registers: [{ name: 'kv', kind: 'map' as const }], policy: 'buffer' }];
    const cfgZ = configOf(p, 'z', ['b', 'x'], { domains: dom(['b']) });
    const z = new Spookd(cfgZ, p.keys.z, silent);
    all.push(z);
    await z.start();
    const r = await applyConfig(z, configOf(p, 'z', ['x'], { domains: dom(['x']) }));
    expect(r.removed).toEqual([]);
    expect(r.refused).toEqual([{ peer: 'b', reason: 'peer b is a member of domain main: change the domain first' }]);
    expect(r.needRestart).toEqual(['domains[main].members']);
    expect([...z.links.keys()]).toEqual(['b', 'x']);
    expect(z.cfg.peers.map((x) => x.name)).toEqual(['b', 'x']);
    expect(z.cfg.domains).toEqual(cfgZ.domains);
  });
});

describe('reload: the admin command', () => {
  const call = {} as Call;
  const fault = async (f: () => Promise<unknown>): Promise<{ code: string; field?: string; message: string }> => {
    try {
      await f();
    } catch (e) {
      expect(e).toBeInstanceOf(AdminFault);
      return e as AdminFault;
    }
    throw new Error('no fault');
  };

  it("shares SIGHUP's reload: one at a time, a file that does not validate names its field and changes nothing", async () => {
    const a = all[0];
    const reload = reloadHandlers(a).reload;
    expect((await fault(async () => reload({}, call))).code).toBe('conflict'); // no configuration file
    const file = join(p.dir, 'a.yaml');
    a.configPath = file;
    writeFileSync(file, stringify(a.cfg));
    const first = a.reload();
    const busy = await fault(async () => reload({}, call));
    expect([busy.code, busy.message]).toEqual(['reload-in-progress', 'a reload is under way: retry once it is done']);
    expect((await first).needRestart).toEqual([]);

    const running = a.cfg;
    writeFileSync(file, stringify({ ...a.cfg, registers: [{ ...a.cfg.registers[0], maxKeys: 0 }] }));
    const bad = await fault(async () => reload({}, call));
    expect([bad.code, bad.field]).toEqual(['bad-config', 'registers.0.maxKeys']);
    expect(bad.message).toContain(`${file}: registers.0.maxKeys: `);
    expect(a.cfg).toBe(running);

    writeFileSync(file, stringify({ ...a.cfg, registers: [{ ...a.cfg.registers[0], maxKeys: 11 }] }));
    const r = await reload({}, call);
    expect(r.limits.map((l) => [l.register, l.changed])).toEqual([['config', ['maxKeys']]]);
    expect(a.link('b').pair.register('config').cfg.quota.maxKeys).toBe(11);
  });
});

describe('reload: a write pending on a removed peer', () => {
  it('ends with peer-removed, and is not proposed again when the peer comes back', async () => {
    const cfgX = configOf(p, 'x', ['y']);
    const cfgY = configOf(p, 'y', ['x']);
    const x = new Spookd(cfgX, p.keys.x, silent);
    let y = new Spookd(cfgY, p.keys.y, silent);
    all.push(x, y);
    await Promise.all([x.start(), y.start()]);
    await until('x-y entangled', () => x.link('y').pair.state === 'ENTANGLED' && y.link('x').pair.state === 'ENTANGLED');
    // The follower's write waits for the sequencer: stop the sequencer, write on the follower.
    const [f, fName, s, sName, sCfg] = x.link('y').pair.role === 'follower' ? [x, 'x', y, 'y', cfgY] : [y, 'y', x, 'x', cfgX];
    await s.stop();
    const client = await AdminClient.connect(f.cfg.adminSocket);
    try {
      const asked = client.request('set', { peer: sName, register: 'config', key: 'lost', value: 'v', timeoutMs: 60_000 });
      const settled = asked.then(
        () => 'answered',
        (e: unknown) => e,
      );
      await until('the write is pending', () => f.link(sName).pair.register('config').pendingCount === 1);
      const r = await applyConfig(f, { ...f.cfg, peers: [] });
      expect(r.removed).toEqual([sName]);
      const e = await settled;
      expect(e).toBeInstanceOf(SpookError);
      expect((e as SpookError).code).toBe('peer-removed');
      expect((e as SpookError).message).toMatch(new RegExp(`peer ${sName} was removed`));
    } finally {
      client.close();
    }

    // The peer back (restarted, and configured again here): the abandoned write never commits.
    const back = new Spookd(sCfg, p.keys[sName], silent);
    all.push(back);
    if (s === y) y = back;
    await back.start();
    await applyConfig(f, fName === 'x' ? cfgX : cfgY);
    await until('entangled again', () => f.link(sName).pair.state === 'ENTANGLED' && back.link(fName).pair.state === 'ENTANGLED', 20_000);
    expect(f.link(sName).pair.register('config').pendingCount).toBe(0);
    expect((await outcome(f, sName, 'after')).verdict).toBe('committed');
    await until('the later write reached the peer', () => has(back, fName, 'after'));
    expect([has(f, sName, 'lost'), has(back, fName, 'lost')]).toEqual([false, false]);
  }, 30_000);
});
