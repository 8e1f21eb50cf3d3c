/**
 * A library write asks spookd to wait for its outcome up to a margin before the call's own
 * deadline (client/session.ts Session.write), so that `pending` arrives before the call times out.
 * With a fixed margin of 1 s, a call of `timeoutMs` 1,000 or less asked spookd to wait 0 ms: a
 * write that commits in milliseconds was always answered `pending`. The margin is a share of the
 * time left for a short call: such a write is answered with its outcome.
 *
 * Two spookd in this process (a pair and a two-member domain), on free loopback ports the kernel gives.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { Spookd } from '../drivers/daemon/spookd.js';
import { PairState } from '../core/pair/lifecycle.js';
import { openRegister } from '../client/register.js';
import { openDomain } from '../client/domain.js';
import { configOf, inProcess, logOf, until } from './inproc.js';
import { freePort } from './admin-solo.js';

const lab = inProcess('spook-short-timeout', ['a', 'b'], 0);
const d: Record<string, Spookd> = {};
const sock = (n: string): string => join(lab.dir, `${n}.sock`);
const domain = (other: string): Record<string, unknown> => ({
  domains: [{ name: 'main', members: [other], registers: [{ name: 'kv', kind: 'map' }], policy: 'buffer' }],
});

beforeAll(async () => {
  lab.port.a = await freePort();
  lab.port.b = await freePort();
  d.a = new Spookd(configOf(lab, 'a', ['b'], domain('b')), lab.keys.a, logOf(lab, 'a'));
  d.b = new Spookd(configOf(lab, 'b', ['a'], domain('a')), lab.keys.b, logOf(lab, 'b'));
  await Promise.all([d.a.start(), d.b.start()]);
  await until('a-b entangled', () => d.a.link('b').pair.state === PairState.ENTANGLED);
}, 30_000);

afterAll(async () => {
  await Promise.all(Object.values(d).map((s) => s.stop()));
  rmSync(lab.dir, { recursive: true, force: true });
});

describe('a write whose call has under a second', { timeout: 30_000 }, () => {
  it('a domain write of timeoutMs 800 is answered committed, not pending', async () => {
    const dom = await openDomain('main', { socket: sock('a') });
    try {
      const kv = dom.register('kv');
      // The domain has a leader and commits (a long call).
      await until('a leader', () => d.a.domains.get('main')!.summary(d.a.now()).leader !== null);
      expect((await kv.set('warm', '1', { timeoutMs: 10_000 })).verdict).toBe('committed');
      const verdicts: string[] = [];
      for (let i = 0; i < 5; i++) {
        const t0 = performance.now();
        const r = await kv.set(`k${i}`, 'v', { timeoutMs: 800 });
        verdicts.push(`${r.verdict} (${r.reason ?? ''}) in ${Math.round(performance.now() - t0)} ms`);
      }
      expect(verdicts.filter((v) => !v.startsWith('committed'))).toEqual([]);
    } finally {
      dom.close();
    }
  });

  it('a pair write of timeoutMs 800 is answered committed, not pending', async () => {
    const reg = await openRegister('config', { socket: sock('a'), peer: 'b' });
    try {
      expect((await reg.set('warm', '1', { timeoutMs: 10_000 })).verdict).toBe('committed');
      const verdicts: string[] = [];
      for (let i = 0; i < 5; i++) {
        const r = await reg.set(`k${i}`, 'v', { timeoutMs: 800 });
        verdicts.push(`${r.verdict} (${r.reason ?? ''})`);
      }
      expect(verdicts.filter((v) => !v.startsWith('committed'))).toEqual([]);
    } finally {
      reg.close();
    }
  });
});
