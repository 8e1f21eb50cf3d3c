/**
 * A map key that is not UTF-8, addressed by its bytes through the library (LIBRARY.md, "Reading and
 * watching"). The library names such a key by its base64 (`key`), which can be another key's text:
 * the bytes 69 b7 1d are named "abcd". A peer may write that binary key beside an application's
 * text key "abcd"; before, `get`/`set`/`cas`/`del`/`txn` took keys only as text (and spookd's pair
 * `get` and a domain `dget` of `keyBase64` alone refused the bytes), so what a scan or a watch showed
 * could not be read, written or deleted: the name read the text key, the bytes were refused.
 * Every call now takes `string | Uint8Array`, and a result's `keyBytes` goes back into any of them.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { Spookd } from '../drivers/daemon/spookd.js';
import { PairState } from '../core/pair/lifecycle.js';
import { AdminClient } from '../client/admin-client.js';
import { openRegister } from '../client/register.js';
import { openDomain } from '../client/domain.js';
import type { Change, ScanEntry } from '../client/feed.js';
import { configOf, inProcess, logOf, until } from './inproc.js';
import { freePort } from './admin-solo.js';

const lab = inProcess('spook-binary-keys', ['a', 'b'], 0);
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

/** The application's text key, and the peer's binary key whose base64 is that text. */
const TEXT = 'abcd';
const BIN = new Uint8Array([0x69, 0xb7, 0x1d]);
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');

beforeAll(async () => {
  expect(Buffer.from(BIN).toString('base64')).toBe(TEXT);
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

/** Each entry's bytes (hex) and value; the two keys are one name. */
const byBytes = (es: ScanEntry[]): Record<string, string | undefined> => Object.fromEntries(es.map((e) => [hex(e.keyBytes), e.value]));

describe('a binary key named like a text key', { timeout: 30_000 }, () => {
  it('is read, written, scanned, watched and deleted by its bytes on a pair register, apart from the text key', async () => {
    const reg = await openRegister('config', { socket: sock('a') });
    const peer = await AdminClient.connect(sock('b'));
    const changes: Change[] = [];
    const w = await reg.watch(BIN.subarray(0, 2), { onChange: (c) => void changes.push(c) });
    try {
      expect((await reg.set(TEXT, 'text')).verdict).toBe('committed');
      // The peer writes the binary key (its admin API takes bytes as keyBase64).
      const p = await peer.request('set', { register: 'config', keyBase64: TEXT, value: 'binary' });
      expect(p.verdict).toBe('committed');
      await until('both keys at a', () => d.a.link('b').pair.register('config').version >= p.version!);

      const all = await reg.scanAll('');
      // The names are one (kept for compatibility); the bytes are two keys.
      expect(all.entries.map((e) => e.key)).toEqual([TEXT, TEXT]);
      expect(byBytes(all.entries)).toEqual({ [hex(Buffer.from(TEXT))]: 'text', [hex(BIN)]: 'binary' });
      // Each entry's keyBytes reads its own key.
      for (const e of all.entries) expect((await reg.get(e.keyBytes)).value).toBe(e.value);
      expect((await reg.get(TEXT)).value).toBe('text');

      // Written by its bytes: the text key is untouched.
      const s1 = await reg.set(BIN, 'binary-2');
      expect(s1.verdict).toBe('committed');
      const got = await reg.get(BIN);
      expect(got.value).toBe('binary-2');
      expect((await reg.cas(BIN, got.keyVersion!, 'binary-3')).verdict).toBe('committed');
      expect(
        (
          await reg.txn([
            { op: 'cas', key: BIN, expect: (await reg.get(BIN)).keyVersion!, value: 'binary-4' },
            { op: 'set', key: TEXT, value: 'text-2' },
          ])
        ).verdict,
      ).toBe('committed');
      expect([(await reg.get(BIN)).value, (await reg.get(TEXT)).value]).toEqual(['binary-4', 'text-2']);

      // A prefix and `after` of bytes.
      expect(byBytes((await reg.scanAll(BIN.subarray(0, 1))).entries)).toEqual({ [hex(BIN)]: 'binary-4' });
      const first = await reg.scan('', { limit: 1 });
      const rest = await reg.scan('', { after: first.entries[0].keyBytes, version: first.version, cursor: first.next?.cursor });
      expect([...first.entries, ...rest.entries].map((e) => hex(e.keyBytes))).toEqual([hex(Buffer.from(TEXT)), hex(BIN)]);

      // Deleted by its bytes: the text key stays.
      const del = await reg.del(BIN);
      expect(del.verdict).toBe('committed');
      expect((await reg.get(BIN)).found).toBe(false);
      expect((await reg.get(TEXT)).value).toBe('text-2');
      expect(byBytes((await reg.scanAll('')).entries)).toEqual({ [hex(Buffer.from(TEXT))]: 'text-2' });

      // The watch of the binary prefix saw only the binary key's changes, each naming its bytes.
      await until('watched', () => w.lastVersion >= del.version!);
      expect(changes.map((c) => [c.op, hex(c.keyBytes!), c.value])).toEqual([
        ['set', hex(BIN), 'binary'],
        ['set', hex(BIN), 'binary-2'],
        ['set', hex(BIN), 'binary-3'],
        ['set', hex(BIN), 'binary-4'],
        ['del', hex(BIN), undefined],
      ]);
      expect((await reg.del(TEXT)).verdict).toBe('committed');
      expect((await reg.scanAll('')).entries).toEqual([]);
      // A key neither text nor bytes (from JavaScript) rejects naming it, never throws nor writes another key.
      await expect(reg.set(5 as never, 'v')).rejects.toMatchObject({ code: 'bad-argument', field: 'key' });
      await expect(reg.txn([{ op: 'del', key: {} as never }])).rejects.toMatchObject({ code: 'bad-argument', field: 'ops[0].key' });
    } finally {
      w.close();
      peer.close();
      reg.close();
    }
  });

  it('is read, written, scanned, watched and deleted by its bytes on a domain register, apart from the text key', async () => {
    const dom = await openDomain('dom', { socket: sock('a') });
    const peer = await AdminClient.connect(sock('b'));
    const kv = dom.register('kv');
    const changes: Change[] = [];
    const w = await kv.watch(BIN.subarray(0, 2), { onChange: (c) => void changes.push(c) });
    try {
      expect((await kv.set(TEXT, 'text')).verdict).toBe('committed');
      const p = await peer.request('dpropose', { domain: 'dom', ops: [{ register: 'kv', op: 'set', keyBase64: TEXT, value: 'binary' }] });
      expect(p.verdict).toBe('committed');
      // The peer's own read of the binary key by keyBase64 alone.
      expect(await peer.request('dget', { domain: 'dom', register: 'kv', keyBase64: TEXT })).toMatchObject({ found: true });
      await until('both keys at a', () => d.a.domain('dom').read('kv', BIN).entry !== undefined);

      const all = await kv.scanAll('');
      expect(all.entries.map((e) => e.key)).toEqual([TEXT, TEXT]);
      expect(byBytes(all.entries)).toEqual({ [hex(Buffer.from(TEXT))]: 'text', [hex(BIN)]: 'binary' });
      for (const e of all.entries) expect((await kv.get(e.keyBytes)).value).toBe(e.value);

      expect((await kv.set(BIN, 'binary-2')).verdict).toBe('committed');
      const got = await kv.get(BIN);
      expect(got.value).toBe('binary-2');
      expect((await kv.cas(BIN, got.keyVersion!, 'binary-3')).verdict).toBe('committed');
      expect(
        (
          await dom.txn([
            { register: 'kv', op: 'cas', key: BIN, expect: (await kv.get(BIN)).keyVersion!, value: 'binary-4' },
            { register: 'kv', op: 'set', key: TEXT, value: 'text-2' },
          ])
        ).verdict,
      ).toBe('committed');
      expect([(await kv.get(BIN)).value, (await kv.get(TEXT)).value]).toEqual(['binary-4', 'text-2']);
      expect(byBytes((await kv.scanAll(BIN.subarray(0, 1))).entries)).toEqual({ [hex(BIN)]: 'binary-4' });
      const first = await kv.scan('', { limit: 1 });
      const rest = await kv.scan('', { after: first.entries[0].keyBytes, version: first.version, cursor: first.next?.cursor });
      expect([...first.entries, ...rest.entries].map((e) => hex(e.keyBytes))).toEqual([hex(Buffer.from(TEXT)), hex(BIN)]);

      expect((await kv.del(BIN)).verdict).toBe('committed');
      expect((await kv.get(BIN)).found).toBe(false);
      const text = await kv.get(TEXT);
      expect(text.value).toBe('text-2');
      await until('watched', () => w.lastVersion >= text.version);
      expect(changes.map((c) => [c.op, hex(c.keyBytes!), c.value])).toEqual([
        ['set', hex(BIN), 'binary'],
        ['set', hex(BIN), 'binary-2'],
        ['set', hex(BIN), 'binary-3'],
        ['set', hex(BIN), 'binary-4'],
        ['del', hex(BIN), undefined],
      ]);
      expect((await kv.del(TEXT)).verdict).toBe('committed');
      expect((await kv.scanAll('')).entries).toEqual([]);
    } finally {
      w.close();
      peer.close();
      dom.close();
    }
  });
});
