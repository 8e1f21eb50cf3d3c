/**
 * A key or value given as text that is not well-formed Unicode (a lone surrogate: a JavaScript
 * string cut in the middle of a pair) has no UTF-8 form. spookd turned each lone surrogate into
 * U+FFFD, so the distinct keys "x\uD800" and "x\uDC00" were one key (a write to one overwrote
 * the other) and a value came back other than written; it is now refused (bad-argument), as any
 * text that cannot be what it says; bytes go as base64.
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

const lab = inProcess('spook-lone-surrogate', ['a', 'b'], 0);
const d: Record<string, Spookd> = {};
const sock = (n: string): string => join(lab.dir, `${n}.sock`);
const make = (n: string): Spookd =>
  new Spookd(
    configOf(lab, n, [n === 'a' ? 'b' : 'a'], {
      domains: [
        { name: 'dom', members: [n === 'a' ? 'b' : 'a'], registers: [{ name: 'kv', kind: 'map' }], electionMs: 200, heartbeatMs: 20 },
      ],
    }),
    lab.keys[n],
    logOf(lab, n),
  );

beforeAll(async () => {
  lab.port.a = await freePort();
  lab.port.b = await freePort();
  d.a = make('a');
  d.b = make('b');
  await Promise.all([d.a.start(), d.b.start()]);
  await until('a-b entangled', () => d.a.link('b').pair.state === PairState.ENTANGLED);
}, 30_000);

afterAll(async () => {
  await Promise.all(Object.values(d).map((s) => s.stop()));
  rmSync(lab.dir, { recursive: true, force: true });
});

describe('text that is not well-formed', { timeout: 30_000 }, () => {
  it('is refused as a key or value, never written as another key', async () => {
    const reg = await openRegister('config', { socket: sock('a') });
    const refused = (p: Promise<unknown>): Promise<unknown> =>
      p.then(
        (r) => r,
        (e: unknown) => e,
      );
    try {
      const one = await refused(reg.set('x\uD800', 'one'));
      const two = await refused(reg.set('x\uDC00', 'two'));
      const got = await refused(reg.get('x\uD800'));
      // Before: both committed, to one key; the first reads the second's value.
      expect([one, two, got]).toEqual([
        expect.objectContaining({ code: 'bad-argument', field: 'key' }),
        expect.objectContaining({ code: 'bad-argument', field: 'key' }),
        expect.objectContaining({ code: 'bad-argument', field: 'key' }),
      ]);
      expect(await refused(reg.set('y', 'a\uDFFF'))).toMatchObject({ code: 'bad-argument', field: 'value' });
      expect(
        await refused(
          reg.txn([
            { op: 'set', key: 'z', value: 'ok' },
            { op: 'set', key: 'z\uD800', value: 'no' },
          ]),
        ),
      ).toMatchObject({ code: 'bad-argument', field: 'ops[1].key' });
      expect(await refused(reg.scan('p\uD800'))).toMatchObject({ code: 'bad-argument', field: 'prefix' });
      expect((await reg.scanAll('')).entries.map((e) => e.key)).toEqual([]);
      // Well-formed text, a pair of surrogates among it, is written as it is.
      expect((await reg.set('emoji \uD83D\uDE00', 'v')).verdict).toBe('committed');
      expect((await reg.get('emoji \uD83D\uDE00')).value).toBe('v');
    } finally {
      reg.close();
    }
  });

  it('is refused on a domain too', async () => {
    const dom = await openDomain('dom', { socket: sock('a') });
    try {
      const kv = dom.register('kv');
      const e = await kv.set('x\uD800', 'one', { timeoutMs: 3_000 }).then(
        (r) => r,
        (x: unknown) => x,
      );
      expect(e).toMatchObject({ code: 'bad-argument', field: 'ops[0].key' });
      expect(
        await kv.get('x\uDC00').then(
          (r) => r,
          (x: unknown) => x,
        ),
      ).toMatchObject({ code: 'bad-argument', field: 'key' });
    } finally {
      dom.close();
    }
  });
});
