/**
 * LIBRARY.md: a key comes as its text when it is UTF-8 (base64 only when it is not), a value as
 * text (`value`) whenever it is UTF-8. spookd's admin protocol shows text only for printable
 * UTF-8 (for terminals), so before, a UTF-8 key holding a control character came out of a scan
 * and a watch as base64 (a get of that `key` read another key) and `get().value` of such a value
 * was undefined while a scan gave its text.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { Spookd } from '../drivers/daemon/spookd.js';
import { PairState } from '../core/pair/lifecycle.js';
import { openRegister } from '../client/register.js';
import type { Change } from '../client/feed.js';
import { configOf, inProcess, logOf, until } from './inproc.js';
import { freePort } from './admin-solo.js';

const lab = inProcess('spook-text-controls', ['a', 'b'], 0);
const d: Record<string, Spookd> = {};
const sock = (n: string): string => join(lab.dir, `${n}.sock`);
const make = (n: string): Spookd => new Spookd(configOf(lab, n, [n === 'a' ? 'b' : 'a']), lab.keys[n], logOf(lab, n));

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

describe('keys and values with control characters', { timeout: 30_000 }, () => {
  it('come back as the text that was written, from get, scan and watch', async () => {
    const reg = await openRegister('config', { socket: sock('a') });
    const changes: Change[] = [];
    const w = await reg.watch('', { onChange: (c) => void changes.push(c) });
    const key = 'a\x01b';
    const value = 'red \x1b[31m';
    try {
      // A text key that is the base64 of the control key's bytes: a get of the base64 would read it.
      await reg.set(Buffer.from(key).toString('base64'), 'other');
      const o = await reg.set(key, value);
      expect(o.verdict).toBe('committed');
      const got = await reg.get(key);
      expect(got.value).toBe(value);
      const s = await reg.scanAll('');
      const e = s.entries.find((x) => Buffer.from(x.keyBytes).equals(Buffer.from(key)));
      expect(e?.key).toBe(key);
      expect(e?.value).toBe(value);
      // The key as the scan gave it names the same entry.
      expect((await reg.get(e!.key)).value).toBe(value);
      await until('watched', () => w.lastVersion >= o.version!);
      const c = changes.find((x) => x.version === o.version);
      expect([c?.key, c?.value]).toEqual([key, value]);
    } finally {
      w.close();
      reg.close();
    }
  });
});
