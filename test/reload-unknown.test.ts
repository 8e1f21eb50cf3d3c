/**
 * `peer-removed` means the write's outcome is unknown (issue 18, review): the follower's write the
 * sequencer committed, whose outcome had not reached the follower when a reload removed the
 * sequencer, ends `peer-removed` here, and yet it is committed: once the peer is configured
 * again the follower learns it from the peer's state.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { pino } from 'pino';
import { Spookd } from '../drivers/daemon/spookd.js';
import { applyConfig } from '../drivers/daemon/reload.js';
import { AdminClient, SpookError } from '../client/admin-client.js';
import { configOf, has, inProcess, until, writeTold } from './inproc.js';
import { portBase } from './ports.js';

const p = inProcess('spook-reload-unknown', ['x', 'y'], portBase('reload-unknown.test.ts'));
const silent = pino({ level: 'silent' });
const all: Spookd[] = [];
afterAll(async () => {
  for (const d of all) await d.stop().catch(() => {});
  rmSync(p.dir, { recursive: true, force: true });
});

describe('peer-removed: outcome unknown', () => {
  it('a write the sequencer committed, its outcome not yet back, ends peer-removed; re-added, the peer shows it committed', async () => {
    const cfg = { x: configOf(p, 'x', ['y']), y: configOf(p, 'y', ['x']) };
    const x = new Spookd(cfg.x, p.keys.x, silent);
    const y = new Spookd(cfg.y, p.keys.y, silent);
    all.push(x, y);
    await Promise.all([x.start(), y.start()]);
    await until('x-y entangled', () => x.link('y').pair.state === 'ENTANGLED' && y.link('x').pair.state === 'ENTANGLED');
    const [f, fName, s, sName] = x.link('y').pair.role === 'follower' ? [x, 'x', y, 'y'] : [y, 'y', x, 'x'];
    // The follower hears nothing more from the sequencer: its proposal goes out, the outcome never comes back.
    const hears = f as unknown as { onDatagramSafe: (...a: unknown[]) => void };
    const heard = hears.onDatagramSafe;
    hears.onDatagramSafe = () => {};
    const client = await AdminClient.connect(f.cfg.adminSocket);
    try {
      const asked = client.request('set', { peer: sName, register: 'config', key: 'maybe', value: 'v', timeoutMs: 60_000 });
      const settled = asked.then(
        () => 'answered',
        (e: unknown) => e,
      );
      await until('the sequencer committed it', () => has(s, fName, 'maybe'));
      expect(f.link(sName).pair.register('config').pendingCount).toBe(1);
      await applyConfig(f, { ...f.cfg, peers: [] });
      const e = await settled;
      expect(e).toBeInstanceOf(SpookError);
      expect((e as SpookError).code).toBe('peer-removed');
      expect((e as SpookError).message).toMatch(/outcome is unknown/);
    } finally {
      client.close();
    }
    // Configured again, hearing the peer again: the write is committed at both ends.
    hears.onDatagramSafe = heard;
    await applyConfig(f, cfg[fName as 'x' | 'y']);
    await until('entangled again', () => f.link(sName).pair.state === 'ENTANGLED' && s.link(fName).pair.state === 'ENTANGLED', 20_000);
    await until('the write reached the follower', () => has(f, sName, 'maybe'), 20_000);
    expect(f.link(sName).pair.register('config').pendingCount).toBe(0);
  }, 40_000);

  it("the sequencer's own write made while its peer is being removed is decided, not abandoned", async () => {
    const [x, y] = all;
    const [s, fName] = x.link('y').pair.role === 'sequencer' ? [x, 'y'] : [y, 'x'];
    await until('entangled', () => s.link(fName).pair.state === 'ENTANGLED');
    const removing = s.removePeer(fName); // awaits the goodbye datagram's send
    const { told } = writeTold(s, fName, 'during');
    await removing;
    expect(told.map((e) => e.type === 'outcome' && e.verdict)).toEqual(['committed']);
  });
});
