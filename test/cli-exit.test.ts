import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Spookd } from '../drivers/daemon/spookd.js';
import { AdminClient } from '../client/admin-client.js';
import { configOf, inProcess, logOf, until } from './inproc.js';
import { portBase } from './ports.js';

/**
 * `spook` (the built CLI, a child process) against two spookd in this process: one exit status
 * per outcome for pair and domain commands alike (cli/admin.ts EXIT), and `get --print-value-only`.
 * The CLI talks to the pair's follower (a sequencer commits alone); the other host starts only
 * after the pending cases, so until then neither the pair nor the domain can decide.
 */
const base = portBase('cli-exit.test.ts');
const lab = inProcess('spook-cli', ['a', 'b'], base);
const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const domain = (peer: string): Record<string, unknown> => ({
  domains: [{ name: 'main', members: [peer], registers: [{ name: 'kv', kind: 'map' }], policy: 'buffer' }],
});
const hosts = {
  a: new Spookd(configOf(lab, 'a', ['b'], domain('b')), lab.keys.a, logOf(lab, 'a')),
  b: new Spookd(configOf(lab, 'b', ['a'], domain('a')), lab.keys.b, logOf(lab, 'b')),
};
/** `here` runs the CLI's spookd, the pair's follower; `there` is its peer. */
const [hereName, thereName] = hosts.a.link('b').pair.role === 'follower' ? (['a', 'b'] as const) : (['b', 'a'] as const);
const here = hosts[hereName];
const there = hosts[thereName];
const socket = join(lab.dir, `${hereName}.sock`);
let admin: AdminClient;

beforeAll(async () => {
  await here.start();
  admin = await AdminClient.connect(socket);
});
afterAll(async () => {
  admin?.close();
  await here.stop();
  await there.stop();
  rmSync(lab.dir, { recursive: true, force: true });
});

interface Run {
  code: number | null;
  out: Buffer;
  err: string;
}
/** `spook ARGS -s a.sock`: its exit status, stdout as bytes, stderr. */
function spook(...args: string[]): Promise<Run> {
  const cli = spawn(process.execPath, [join(root, 'bin', 'spook'), ...args, ...(args.includes('-s') ? [] : ['-s', socket])], {
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const out: Buffer[] = [];
  let err = '';
  cli.stdout.on('data', (c: Buffer) => out.push(c));
  cli.stderr.on('data', (c: Buffer) => (err += c.toString()));
  return new Promise((resolve) => cli.on('close', (code) => resolve({ code, out: Buffer.concat(out), err })));
}
const text = (r: Run): string => r.out.toString();

describe('spook exit statuses, pair and domain alike', { timeout: 60_000 }, () => {
  it('6 while a write is not decided (pair set pending); 1 for a domain write held while the member catches up; 3 without a daemon', async () => {
    const [pair, dom, none] = await Promise.all([
      spook('set', 'config', 'early', 'v', '-t', '300'),
      spook('domain', 'set', 'kv', 'early', 'v', '-t', '300'),
      spook('status', '-s', join(lab.dir, 'none.sock')),
    ]);
    expect(here.link(thereName).pair.role).toBe('follower');
    expect([pair.code, text(pair)]).toEqual([6, expect.stringMatching(/^pending \(no outcome within 300 ms/)]);
    // The domain member started empty and never heard a leader: it numbers no write before it has
    // caught up (rev 1.37), so the write is refused when the call's time runs out, nothing proposed.
    expect([dom.code, dom.err]).toEqual([1, expect.stringMatching(/not caught up within 300 ms.*nothing was proposed/)]);
    expect([none.code, none.err]).toEqual([3, expect.stringMatching(/^spook: spookd is not running/)]);
  });

  it('0 committed, 5 rejected, 4 not found, 2 usage or a refused argument, 1 other errors', async () => {
    await there.start();
    await until('the pair entangled', () => here.link(thereName).pair.state === 'ENTANGLED');
    await until('a domain leader', () => here.domains.get('main')!.node.raft.leader !== undefined, 20_000);
    const set = await spook('set', 'config', 'color', 'blue');
    expect([set.code, text(set)]).toEqual([0, expect.stringMatching(/^committed in version \d+/)]);
    const dset = await spook('domain', 'set', 'kv', 'color', 'blue');
    expect([dset.code, text(dset)]).toEqual([0, expect.stringMatching(/^committed at index \d+/)]);
    const runs = await Promise.all([
      spook('cas', 'config', 'color', '999', 'red'),
      spook('domain', 'cas', 'kv', 'color', '999', 'red'),
      spook('get', 'config', 'absent'),
      spook('domain', 'get', 'kv', 'absent'),
      spook('set', 'config', 'only-a-key'),
      spook('domain', 'set', 'kv', 'only-a-key'),
      spook('get', 'config'),
      spook('domain', 'get', 'kv'),
      spook('get', 'nope', 'k'),
      spook('domain', 'get', 'nope', 'k'),
      spook('get', 'config', 'color', '--json'),
    ]);
    expect(runs.map((r) => r.code)).toEqual([5, 5, 4, 4, 2, 2, 2, 2, 1, 1, 0]);
    expect(text(runs[0])).toMatch(/^rejected \(cas-version-mismatch\)/);
    expect(text(runs[1])).toMatch(/^rejected \(cas-version-mismatch\)/);
    expect(runs[4].err).toMatch(/missing required argument 'value'/);
    expect(runs[6].err).toMatch(/argument key must be a string/);
    expect(runs[8].err).toMatch(/^spook: /);
    expect(JSON.parse(text(runs[10]))).toMatchObject({ found: true, value: { text: 'blue' } });
  });

  it('get --print-value-only: the raw bytes alone, no newline, binary safe; 4 and nothing when absent', async () => {
    const bin = Buffer.from([0xff, 0x00, 0x0a, 0xfe, 0x80, 0x0d]);
    expect((await admin.request('set', { register: 'config', key: 'bin', valueBase64: bin.toString('base64') })).verdict).toBe('committed');
    const d = await admin.request('dpropose', { ops: [{ register: 'kv', op: 'set', key: 'bin', valueBase64: bin.toString('base64') }] });
    expect(d.verdict).toBe('committed');
    const [pb, db, pt, pa, da] = await Promise.all([
      spook('get', 'config', 'bin', '--print-value-only'),
      spook('domain', 'get', 'kv', 'bin', '--print-value-only'),
      spook('get', 'config', 'color', '--print-value-only'),
      spook('get', 'config', 'absent', '--print-value-only'),
      spook('domain', 'get', 'kv', 'absent', '--print-value-only'),
    ]);
    expect([pb.code, pb.out]).toEqual([0, bin]);
    expect([db.code, db.out]).toEqual([0, bin]);
    expect([pt.code, text(pt)]).toEqual([0, 'blue']);
    expect([pa.code, pa.out.length, pa.err]).toEqual([4, 0, '']);
    expect([da.code, da.out.length, da.err]).toEqual([4, 0, '']);
  });

  it('--key-base64: a key that is not UTF-8 (69 b7 1d, printed base64:abcd), apart from the text key "abcd"; base64 that is not refused, 2', async () => {
    for (const w of [
      ['set', 'config', '--key-base64', 'abcd', 'bytes'],
      ['set', 'config', 'abcd', 'text'],
      ['domain', 'set', 'kv', '--key-base64', 'abcd', 'bytes'],
      ['domain', 'set', 'kv', 'abcd', 'text'],
    ])
      expect((await spook(...w)).code).toBe(0);
    const runs = await Promise.all([
      spook('get', 'config', '--key-base64', 'abcd', '--print-value-only'),
      spook('get', 'config', 'abcd', '--print-value-only'),
      spook('domain', 'get', 'kv', '--key-base64', 'abcd', '--print-value-only'),
      spook('domain', 'get', 'kv', 'abcd', '--print-value-only'),
      spook('get', 'config', '--key-base64', 'ab$d'),
      spook('domain', 'get', 'kv', '--key-base64', 'abc'),
    ]);
    expect(runs.map((r) => [r.code, text(r)])).toEqual([
      [0, 'bytes'],
      [0, 'text'],
      [0, 'bytes'],
      [0, 'text'],
      [2, ''],
      [2, ''],
    ]);
    expect(runs[4].err).toMatch(/argument keyBase64 must be base64/);
    const { value } = await admin.request('get', { register: 'config', keyBase64: Buffer.from([0x69, 0xb7, 0x1d]).toString('base64') });
    expect(value?.text).toBe('bytes');
    for (const del of [spook('del', 'config', '--key-base64', 'abcd'), spook('domain', 'del', 'kv', '--key-base64', 'abcd')])
      expect((await del).code).toBe(0);
    const left = await Promise.all([spook('get', 'config', 'abcd', '--print-value-only'), spook('get', 'config', '--key-base64', 'abcd')]);
    expect(left.map((r) => r.code)).toEqual([0, 4]);
  });
});
