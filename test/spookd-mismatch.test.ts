import { afterAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { configOf, inProcess, logOf, until } from './inproc.js';
import { portBase } from './ports.js';
import { Spookd } from '../drivers/daemon/spookd.js';
import { PairState } from '../core/pair/lifecycle.js';
import { AdminClient, SpookError, openRegister } from '../client/index.js';

/**
 * Register mismatch at pairing (docs/PROTOCOL.md §6.3), with two spookd in this process: a
 * declares `config` and `extra`, b only `config`. Both pairs go DECOHERENT with cause
 * register-mismatch, `pair` names the register, a write fails with code register-mismatch,
 * spookd warns once; fixing b's configuration and restarting it entangles the pair.
 */
const base = portBase('spookd-mismatch.test.ts');
const lab = inProcess('spook-mismatch', ['a', 'b'], base);
const d: Record<string, Spookd> = {};
const regsA = {
  registers: [
    { name: 'config', kind: 'map' },
    { name: 'extra', kind: 'map' },
  ],
};
const start = async (name: string, peer: string, extra: Record<string, unknown> = {}): Promise<Spookd> => {
  const s = new Spookd(configOf(lab, name, [peer], extra), lab.keys[name], logOf(lab, name));
  await s.start();
  return (d[name] = s);
};

afterAll(async () => {
  await Promise.all(Object.values(d).map((s) => s.stop()));
  rmSync(lab.dir, { recursive: true, force: true });
});

describe('spookd: register mismatch', () => {
  it('both ends DECOHERENT naming the register; `pair` and `status` show it; a write fails with register-mismatch; one warning', async () => {
    await start('a', 'b', regsA);
    await start('b', 'a');
    await until(
      'both decoherent by mismatch',
      () => d.a.link('b').pair.registerMismatch !== undefined && d.b.link('a').pair.registerMismatch !== undefined,
    );
    expect(d.a.link('b').pair.state).toBe(PairState.DECOHERENT);
    expect(d.b.link('a').pair.state).toBe(PairState.DECOHERENT);

    const admin = await AdminClient.connect(d.b.cfg.adminSocket);
    const p = await admin.request('pair', { peer: 'a' });
    expect(p.state).toBe('DECOHERENT');
    expect(p.registerMismatch).toEqual({
      reason: 'register extra missing here (declared at a)',
      registers: [{ register: 'extra', how: 'missing-here' }],
    });
    const s = await admin.request('status');
    expect(s.pairs).toEqual([{ peer: 'a', state: 'DECOHERENT', registerMismatch: 'register extra missing here (declared at a)' }]);
    const adminA = await AdminClient.connect(d.a.cfg.adminSocket);
    expect((await adminA.request('pair', { peer: 'b' })).registerMismatch?.reason).toBe('register extra missing at b');
    adminA.close();

    // The library sees the code (not `pending` with exit 0), with the register that differs named.
    const reg = await openRegister('config', { socket: d.b.cfg.adminSocket });
    const err = await reg.set('k', 'v').then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(SpookError);
    expect((err as SpookError).code).toBe('register-mismatch');
    expect((err as SpookError).message).toMatch(/register config is declared at both ends.*register extra missing here \(declared at a\)/);
    reg.close();
    admin.close();

    // Logged at warn once per end, naming the peer and the register, whatever the keepalives resend.
    await new Promise((r) => setTimeout(r, 1000));
    const warns = (n: string) => lab.logs[n].filter((l) => l.includes('register mismatch with peer'));
    expect(warns('a')).toHaveLength(1);
    expect(warns('b')).toHaveLength(1);
    expect(warns('b')[0]).toContain('register extra missing here (declared at a)');
  }, 30_000);

  it('b fixed and restarted: the pair entangles and writes commit', async () => {
    await d.b.stop();
    delete d.b;
    await start('b', 'a', regsA);
    await until('entangled', () => d.a.link('b').pair.state === PairState.ENTANGLED && d.b.link('a').pair.state === PairState.ENTANGLED);
    expect(d.a.link('b').pair.registerMismatch).toBeUndefined();
    const reg = await openRegister('extra', { socket: d.b.cfg.adminSocket });
    expect((await reg.set('k', 'v')).verdict).toBe('committed');
    reg.close();
  }, 30_000);
});
