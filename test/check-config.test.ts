import { afterAll, describe, expect, it } from 'vitest';
import { spawn, spawnSync } from 'node:child_process';
import { createSocket } from 'node:dgram';
import { createServer } from 'node:net';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { encodeKey } from '../drivers/daemon/keys.js';
import { generateKeyPair } from '../crypto/primitives.js';
import { portBase } from './ports.js';

/**
 * `spookd --check-config` reports everything a start would fail on, by field, in one line each,
 * and a start that fails anyway names the field: no stack traces for an operator's mistakes.
 */
const SPOOKD = join(import.meta.dirname, '..', 'bin', 'spookd');
const dir = mkdtempSync(join(tmpdir(), 'spook-check-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const own = generateKeyPair();
const other = generateKeyPair();
const keyFile = join(dir, 'key');
writeFileSync(keyFile, `${encodeKey(own.privateKey)}\n`, { mode: 0o600 });
/** The listen port (UDP); +1, +2: peer endpoints; +3: the metrics port (TCP). */
const PORT = portBase('check-config.test.ts');
const METRICS_PORT = PORT + 3;

function conf(name: string, extra: Record<string, unknown> = {}): string {
  const path = join(dir, `${name}.conf`);
  writeFileSync(
    path,
    stringify({
      listen: `127.0.0.1:${PORT}`,
      privateKeyFile: keyFile,
      dataDir: join(dir, name, 'data'),
      adminSocket: join(dir, name, 'admin.sock'),
      peers: [{ name: 'b', publicKey: encodeKey(other.publicKey), endpoint: `127.0.0.1:${PORT + 1}` }],
      registers: [{ name: 'config', kind: 'map' }],
      ...extra,
    }),
  );
  return path;
}
const check = (path: string, ...args: string[]) =>
  spawnSync(SPOOKD, ['--config', path, '--check-config', ...args], { encoding: 'utf8', timeout: 30_000 });
const noStack = (s: string): void => expect(s).not.toMatch(/^\s+at /m);

describe('spookd --check-config', () => {
  it('passes a good configuration', () => {
    const r = check(conf('good'));
    expect(r.stderr).toBe('');
    expect(r.stdout).toMatch(/: OK \(1 peer\(s\), 1 register\(s\)/);
    expect(r.status).toBe(0);
  });

  it('names every problem a start would hit, one line each, exit 2', () => {
    writeFileSync(join(dir, 'a-file'), 'x');
    writeFileSync(join(dir, 'not-a-socket'), 'x');
    const path = conf('bad', {
      dataDir: join(dir, 'a-file'),
      adminSocket: join(dir, 'not-a-socket'),
      peers: [
        { name: 'b', publicKey: encodeKey(other.publicKey), endpoint: `127.0.0.1:${PORT + 1}` },
        { name: 'me', publicKey: encodeKey(own.publicKey), endpoint: `127.0.0.1:${PORT + 2}` },
      ],
    });
    const r = check(path);
    expect(r.status).toBe(2);
    noStack(r.stderr);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toEqual([
      `${path}: peers.1.publicKey: is this host's own public key (from privateKeyFile): a host cannot pair with itself; use the other host's key`,
      `${path}: dataDir: ${join(dir, 'a-file')}: is a file, not a directory`,
      `${path}: adminSocket: ${join(dir, 'not-a-socket')} exists and is not a socket (spookd replaces only a stale socket)`,
    ]);
  });

  it('refuses a silence shorter than two keepalives', () => {
    const path = conf('timing', { timing: { keepaliveMs: 1000, silenceMs: 1500 } });
    const r = check(path);
    expect(r.status).toBe(2);
    expect(r.stderr.trim()).toBe(`spookd: ${path}: timing.silenceMs: silenceMs (1500) must be at least twice keepaliveMs (1000)`);
  });

  it('finds the ports in use (UDP listen, metrics), unless told not to look', async () => {
    const udp = createSocket('udp4');
    await new Promise<void>((r) => udp.bind(PORT, '127.0.0.1', r));
    const tcp = createServer();
    await new Promise<void>((r) => tcp.listen(METRICS_PORT, '127.0.0.1', r));
    try {
      const path = conf('ports', { metrics: { listen: `127.0.0.1:${METRICS_PORT}` } });
      const r = check(path);
      expect(r.status).toBe(2);
      noStack(r.stderr);
      expect(r.stderr).toContain(`${path}: listen: 127.0.0.1:${PORT} (UDP): already in use`);
      expect(r.stderr).toContain(`${path}: metrics.listen: 127.0.0.1:${METRICS_PORT} (TCP): already in use`);
      expect(check(path, '--no-check-ports').status).toBe(0);
    } finally {
      udp.close();
      tcp.close();
    }
  });
});

describe('a start that fails', () => {
  it('names the field in one fatal line when its port is taken (exit 1, no stack trace)', async () => {
    const udp = createSocket('udp4');
    await new Promise<void>((r) => udp.bind(PORT, '127.0.0.1', r));
    try {
      const child = spawn(SPOOKD, ['--config', conf('start')], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      child.stdout.on('data', (c: Buffer) => (out += c.toString()));
      child.stderr.on('data', (c: Buffer) => (out += c.toString()));
      const code = await new Promise<number | null>((r) => {
        const t = setTimeout(() => child.kill('SIGKILL'), 20_000);
        child.on('exit', (c) => (clearTimeout(t), r(c)));
      });
      expect(code).toBe(1);
      noStack(out);
      const fatal = out
        .split('\n')
        .filter(Boolean)
        .map((l) => JSON.parse(l) as { level: number; msg: string })
        .filter((l) => l.level === 60);
      expect(fatal.map((l) => l.msg)).toEqual([
        `listen: 127.0.0.1:${PORT} (UDP): already in use (another spookd, or another program: \`ss -lntup\`) (EADDRINUSE)`,
      ]);
    } finally {
      udp.close();
    }
  }, 30_000);
});
