import { afterEach, describe, expect, it } from 'vitest';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { pino } from 'pino';
import { Spookd } from '../drivers/daemon/spookd.js';
import { configSchema, parseEndpoint } from '../drivers/daemon/config.js';
import { resolveEndpoints, type Lookup } from '../drivers/daemon/resolve.js';
import { reloadFromFile } from '../drivers/daemon/reload.js';
import { configOf, inProcess, until } from './inproc.js';
import { portBase } from './ports.js';

/** Peer endpoints by DNS name: resolved before the start, looked up again while the peer does not answer. */
const running: Spookd[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const d of running.splice(0)) await d.stop();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('endpoint syntax', () => {
  it('takes an IP address or a DNS name, and names the field otherwise', () => {
    expect(parseEndpoint('192.0.2.1:51900')).toEqual({ host: '192.0.2.1', port: 51900, name: false });
    expect(parseEndpoint('[2001:db8::1]:51900')).toEqual({ host: '2001:db8::1', port: 51900, name: false });
    expect(parseEndpoint('peer-b.example.net:51900')).toEqual({ host: 'peer-b.example.net', port: 51900, name: true });
    expect(parseEndpoint('localhost:1')).toEqual({ host: 'localhost', port: 1, name: true });
    for (const bad of [
      'peer_b.example:1',
      'a..b:1',
      '-a.example:1',
      'x.example:0',
      'x.example:70000',
      '1.2.3:51900',
      'x.example',
      '[x.example]:1',
    ])
      expect(parseEndpoint(bad), bad).toBeUndefined();
    const r = configSchema.safeParse({
      listen: '127.0.0.1:1',
      privateKeyFile: '/k',
      dataDir: '/d',
      adminSocket: '/s',
      peers: [{ name: 'b', publicKey: 'A'.repeat(43) + '=', endpoint: 'bad_name:1' }],
      registers: [{ name: 'r', kind: 'map' }],
    });
    expect(r.success).toBe(false);
    expect(r.error!.issues.map((i) => `${i.path.join('.')}: ${i.message}`)).toContain(
      'peers.0.endpoint: must be HOST:PORT with an IP address (IPv6 in brackets) or a DNS name, and a port 1-65535',
    );
  });
});

describe('resolution', () => {
  it('resolves names before the start; one that fails leaves its peer without endpoint, reported by field', async () => {
    const p = inProcess('spook-dns-resolve', ['a', 'b', 'c'], portBase('dns-endpoints.test.ts'));
    dirs.push(p.dir);
    const cfg = configOf(p, 'a', ['b', 'c']);
    cfg.peers[0].endpoint = `b.spook.test:${p.port.b}`;
    cfg.peers[1].endpoint = `gone.spook.test:${p.port.c}`;
    const lookup: Lookup = async (h) => {
      if (h === 'b.spook.test') return '127.0.0.1';
      throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${h}`), { code: 'ENOTFOUND' });
    };
    const r = await resolveEndpoints(cfg, lookup);
    expect(r.cfg.peers.map((x) => x.endpoint)).toEqual([`127.0.0.1:${p.port.b}`, undefined]);
    expect(r.failed).toEqual([{ field: 'peers.1.endpoint', host: 'gone.spook.test', error: 'ENOTFOUND' }]);
    expect([...r.named.keys()]).toEqual(['b', 'c']);
    // The system resolver: localhost is in /etc/hosts on every machine this runs on.
    const sys = await resolveEndpoints({ ...cfg, peers: [{ ...cfg.peers[0], endpoint: `localhost:${p.port.b}` }] });
    expect(sys.cfg.peers[0].endpoint).toMatch(new RegExp(`^(127\\.0\\.0\\.1|\\[::1\\]):${p.port.b}$`));
  });

  it('pairs once a name that did not resolve (or pointed elsewhere) resolves to the peer', async () => {
    const p = inProcess('spook-dns-moved', ['a', 'b'], portBase('dns-endpoints.test.ts') + 3);
    dirs.push(p.dir);
    const log: string[] = [];
    let answer = '127.0.0.9'; // where b was: nothing listens there
    const lookup: Lookup = async () => answer;
    const cfgA = configOf(p, 'a', ['b']);
    cfgA.peers[0].endpoint = `b.spook.test:${p.port.b}`;
    const r = await resolveEndpoints(cfgA, lookup);
    const a = new Spookd(r.cfg, p.keys.a, pino({ level: 'info' }, { write: (s: string) => void log.push(s) }));
    // b knows no endpoint for a: it cannot start the pair, only answer.
    const cfgB = configOf(p, 'b', ['a']);
    cfgB.peers[0].endpoint = undefined;
    const b = new Spookd(cfgB, p.keys.b, pino({ level: 'silent' }));
    running.push(a, b);
    await Promise.all([a.start(), b.start()]);
    a.watchNames(r.named, lookup, 200);
    await new Promise((res) => setTimeout(res, 1_000));
    expect(a.link('b').pair.state).not.toBe('ENTANGLED');
    answer = '127.0.0.1'; // the name moves to where b is
    await until('a and b entangled after the re-resolution', () => a.link('b').pair.state === 'ENTANGLED', 20_000);
    const moved = log
      .map((l) => JSON.parse(l) as { msg: string; from: string; to: string })
      .find((l) => l.msg === 'peer endpoint re-resolved');
    expect(moved).toMatchObject({ from: `127.0.0.9:${p.port.b}`, to: `127.0.0.1:${p.port.b}` });
  }, 40_000);
});

describe('resolution after a reload', () => {
  it('a peer a reload adds by a name that does not resolve yet pairs once it does; a running peer whose name fails keeps its address', async () => {
    const p = inProcess('spook-dns-reload', ['a', 'b', 'c'], portBase('dns-endpoints.test.ts') + 5);
    dirs.push(p.dir);
    let cAnswer = ''; // c.spook.test: not yet in the DNS
    let bFails = false;
    const lookup: Lookup = async (h) => {
      if (h === 'b.spook.test' && !bFails) return '127.0.0.1';
      if (h === 'c.spook.test' && cAnswer !== '') return cAnswer;
      throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${h}`), { code: 'ENOTFOUND' });
    };
    const cfgA = configOf(p, 'a', ['b']);
    cfgA.peers[0].endpoint = `b.spook.test:${p.port.b}`;
    const r = await resolveEndpoints(cfgA, lookup);
    const a = new Spookd(r.cfg, p.keys.a, pino({ level: 'silent' }));
    const cfgB = configOf(p, 'b', ['a']);
    // c knows no endpoint for a: only a can start that pair, from the address it resolves.
    const cfgC = configOf(p, 'c', ['a']);
    cfgC.peers[0].endpoint = undefined;
    const b = new Spookd(cfgB, p.keys.b, pino({ level: 'silent' }));
    const c = new Spookd(cfgC, p.keys.c, pino({ level: 'silent' }));
    running.push(a, b, c);
    await Promise.all([a.start(), b.start(), c.start()]);
    a.watchNames(r.named, lookup, 200);
    await until('a-b entangled', () => a.link('b').pair.state === 'ENTANGLED');
    // The file now names c by a name that does not resolve yet; b's name fails this time.
    const file = join(p.dir, 'a.yaml');
    const next = configOf(p, 'a', ['b', 'c']);
    next.peers[0].endpoint = `b.spook.test:${p.port.b}`;
    next.peers[1].endpoint = `c.spook.test:${p.port.c}`;
    writeFileSync(file, stringify(next));
    bFails = true;
    const report = await reloadFromFile(a, file);
    expect(report.added).toEqual(['c']);
    expect(report.moved).toEqual([]); // b keeps 127.0.0.1
    expect(a.cfg.peers.find((x) => x.name === 'b')?.endpoint).toBe(`127.0.0.1:${p.port.b}`);
    await new Promise((res) => setTimeout(res, 600));
    expect(a.link('c').pair.state).not.toBe('ENTANGLED');
    cAnswer = '127.0.0.1';
    await until('a-c entangled after c.spook.test resolves', () => a.link('c').pair.state === 'ENTANGLED', 20_000);
    expect(a.link('b').pair.state).toBe('ENTANGLED');
  }, 40_000);
});
