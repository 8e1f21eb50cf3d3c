import { afterAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { encodeKey } from '../drivers/daemon/keys.js';
import { generateKeyPair } from '../crypto/primitives.js';

/** A real spookd process: SIGHUP applies a changed peer list, names what needs a restart, and survives a broken file. */
const SPOOKD = join(import.meta.dirname, '..', 'bin', 'spookd');
const dir = mkdtempSync(join(tmpdir(), 'spook-sighup-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('spookd SIGHUP', () => {
  it('adds and removes peers, names restart-only changes, and keeps running on a broken configuration', async () => {
    const own = generateKeyPair();
    const [b, c] = [generateKeyPair(), generateKeyPair()];
    writeFileSync(join(dir, 'key'), `${encodeKey(own.privateKey)}\n`, { mode: 0o600 });
    const conf = join(dir, 'spookd.conf');
    const base = {
      listen: '127.0.0.1:27420',
      privateKeyFile: join(dir, 'key'),
      dataDir: join(dir, 'data'),
      adminSocket: join(dir, 'admin.sock'),
      fsync: 'never',
      registers: [{ name: 'config', kind: 'map' }],
    };
    const peer = (name: string, k: { publicKey: Uint8Array }, port: number) => ({
      name,
      publicKey: encodeKey(k.publicKey),
      endpoint: `127.0.0.1:${port}`,
    });
    writeFileSync(conf, stringify({ ...base, peers: [peer('b', b, 27421)] }));
    const child = spawn(SPOOKD, ['--config', conf], { stdio: ['ignore', 'pipe', 'pipe'] });
    const lines: { level: number; msg: string }[] = [];
    let buf = '';
    child.stdout.on('data', (d: Buffer) => {
      buf += d.toString();
      for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
        lines.push(JSON.parse(buf.slice(0, i)) as { level: number; msg: string });
        buf = buf.slice(i + 1);
      }
    });
    const seen = async (re: RegExp, after = 0): Promise<string> => {
      for (const end = Date.now() + 15_000; Date.now() < end; await new Promise((r) => setTimeout(r, 50))) {
        const l = lines.slice(after).find((x) => re.test(x.msg));
        if (l) return l.msg;
      }
      throw new Error(`no log line matching ${re}: ${lines.map((l) => l.msg).join(' | ')}`);
    };
    try {
      await seen(/^listening$/);
      let mark = lines.length;
      writeFileSync(conf, stringify({ ...base, peers: [peer('c', c, 27422)], timing: { keepaliveMs: 500 } }));
      child.kill('SIGHUP');
      expect(await seen(/^reloaded /, mark)).toBe(`reloaded ${conf}: 1 peer(s) added, 1 removed, 0 rekeyed, 0 moved`);
      expect(await seen(/applied only at a restart/, mark)).toBe('changed, applied only at a restart: timing');
      mark = lines.length;
      writeFileSync(conf, 'peers: [');
      child.kill('SIGHUP');
      expect(await seen(/^reload failed, nothing changed: /, mark)).toContain('not valid YAML');
      expect(child.exitCode).toBeNull(); // still running
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
  }, 60_000);
});
