import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { configOf, inProcess, logOf, until } from './inproc.js';
import { portBase } from './ports.js';
import { Spookd } from '../drivers/daemon/spookd.js';
import { PairState } from '../core/pair/lifecycle.js';
import type { MapState } from '../core/register/map.js';
import { openRegister } from '../client/register.js';
import { SpookError } from '../client/admin-client.js';

/** Large values through two spookd on loopback: the library, the admin API, ETCP and the fragmentation layer (§3.4). */
const base = portBase('large-values-spookd.test.ts');
const lab = inProcess('spook-large', ['a', 'b'], base);
const d: Record<string, Spookd> = {};
const MiB = 1024 * 1024;

beforeAll(async () => {
  const registers = [{ name: 'config', kind: 'map', maxValueBytes: 2 * MiB }];
  d.a = new Spookd(configOf(lab, 'a', ['b'], { registers }), lab.keys.a, logOf(lab, 'a'));
  d.b = new Spookd(configOf(lab, 'b', ['a'], { registers }), lab.keys.b, logOf(lab, 'b'));
  await Promise.all([d.a.start(), d.b.start()]);
  await until('a-b entangled', () => d.a.link('b').pair.state === PairState.ENTANGLED && d.b.link('a').pair.state === PairState.ENTANGLED);
}, 30_000);

afterAll(async () => {
  await Promise.all(Object.values(d).map((s) => s.stop()));
  rmSync(lab.dir, { recursive: true, force: true });
});

describe('large values through spookd on loopback', () => {
  it('a 1 MiB value set through the library commits at both ends; one over the limit is refused with too-large', async () => {
    const h = await openRegister('config', { socket: join(lab.dir, 'a.sock') });
    try {
      const value = new Uint8Array(MiB);
      for (let i = 0; i < value.length; i++) value[i] = (i * 2654435761) >>> 24;
      const pa = d.a.link('b').pair;
      const bytes0 = pa.stats.bytesSent + d.b.link('a').pair.stats.bytesSent;
      const dg0 = pa.stats.datagramsSent + d.b.link('a').pair.stats.datagramsSent;
      const t0 = performance.now();
      const out = await h.set('big', value, { timeoutMs: 30_000 });
      expect(out.verdict).toBe('committed');
      await until(
        'b holds the value',
        () => (d.b.link('a').pair.register('config').state as MapState).get(Buffer.from('big')) !== undefined,
        30_000,
      );
      const ms = performance.now() - t0;
      const got = (d.b.link('a').pair.register('config').state as MapState).get(Buffer.from('big'))!.value;
      expect(Buffer.compare(Buffer.from(got), Buffer.from(value))).toBe(0);
      const wire = pa.stats.bytesSent + d.b.link('a').pair.stats.bytesSent - bytes0;
      const dgs = pa.stats.datagramsSent + d.b.link('a').pair.stats.datagramsSent - dg0;
      console.log(
        `1 MiB through two spookd on loopback: ${ms.toFixed(0)} ms from set() to the peer holding it, ${dgs} datagrams, ${wire} bytes on the wire; ` +
          `a (${pa.role}) ${JSON.stringify(pa.fragments)}, b ${JSON.stringify(d.b.link('a').pair.fragments)}, rtt ${pa.rttMs}`,
      );
      const r = await h.get('big');
      expect(r.bytes?.length).toBe(MiB);
      let err: unknown;
      try {
        await h.set('too-big', new Uint8Array(2 * MiB + 1));
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(SpookError);
      expect((err as SpookError).code).toBe('too-large');
      expect((err as SpookError).message).toContain('value is 2097153 bytes; register cfg limit maxValueBytes is 2097152');
    } finally {
      h.close();
    }
  }, 60_000);
});
