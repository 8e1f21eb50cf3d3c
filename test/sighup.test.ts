import { afterAll, describe, expect, it } from 'vitest';
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { encodeKey } from '../drivers/daemon/keys.js';
import { generateKeyPair } from '../crypto/primitives.js';
import type { ReloadReport } from '../client/protocol.js';
import { portBase } from './ports.js';

/**
 * A real spookd process: SIGHUP applies a changed peer list, names what needs a restart, and survives a broken file;
 * `spook reload` (the built CLI) does the same and prints the report.
 */
const SPOOKD = join(import.meta.dirname, '..', 'bin', 'spookd');
const dir = mkdtempSync(join(tmpdir(), 'spook-sighup-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const SPOOK = join(import.meta.dirname, '..', 'bin', 'spook');
/** spookd's listen; +1, +2: where b and c would be (nothing listens there). */
const PORT = portBase('sighup.test.ts');

/** `spook -s SOCKET ARGS`: its exit status, stdout and stderr. */
function spook(...args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  const cli = spawn(process.execPath, [SPOOK, '-s', join(dir, 'admin.sock'), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  cli.stdout.on('data', (d: Buffer) => (out += d.toString()));
  cli.stderr.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve) => cli.on('close', (code) => resolve({ code, out, err })));
}

describe('spookd SIGHUP', () => {
  it('adds and removes peers, names restart-only changes, and keeps running on a broken configuration', async () => {
    const own = generateKeyPair();
    const [b, c] = [generateKeyPair(), generateKeyPair()];
    writeFileSync(join(dir, 'key'), `${encodeKey(own.privateKey)}\n`, { mode: 0o600 });
    const conf = join(dir, 'spookd.conf');
    const base = {
      listen: `127.0.0.1:${PORT}`,
      privateKeyFile: join(dir, 'key'),
      dataDir: join(dir, 'data'),
      adminSocket: join(dir, 'admin.sock'),
      fsync: 'never',
      wrap: { interception: 'off' }, // the wrapper the reload adds must not reach this host's BPF hooks
      registers: [{ name: 'config', kind: 'map' }],
    };
    const peer = (name: string, k: { publicKey: Uint8Array }, port: number) => ({
      name,
      publicKey: encodeKey(k.publicKey),
      endpoint: `127.0.0.1:${port}`,
    });
    writeFileSync(conf, stringify({ ...base, peers: [peer('b', b, PORT + 1)] }));
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
      writeFileSync(conf, stringify({ ...base, peers: [peer('c', c, PORT + 2)], timing: { keepaliveMs: 500 } }));
      child.kill('SIGHUP');
      expect(await seen(/^reloaded /, mark)).toMatch(
        new RegExp(`^reloaded ${conf}: 1 peer\\(s\\) added, 1 removed, 0 rekeyed, 0 moved; 0 wrapper`),
      );
      expect(await seen(/applied only at a restart/, mark)).toBe('changed, applied only at a restart: timing.keepaliveMs');
      mark = lines.length;
      writeFileSync(conf, 'peers: [');
      child.kill('SIGHUP');
      expect(await seen(/^reload failed, nothing changed: /, mark)).toContain('not valid YAML');
      expect(child.exitCode).toBeNull(); // still running

      // `spook reload` does what SIGHUP does, and answers with the report.
      const wrapped = { protocol: 'tcp', port: 27425, peer: 'c' };
      const next = {
        ...base,
        registers: [{ name: 'config', kind: 'map', maxKeys: 5 }],
        peers: [peer('c', c, PORT + 2)],
        timing: { keepaliveMs: 500 },
        wrap: { interception: 'off', wrappers: [wrapped] },
      };
      writeFileSync(conf, stringify(next));
      const json = await spook('--json', 'reload');
      expect(json.code).toBe(0);
      const report = JSON.parse(json.out) as ReloadReport;
      expect(report).toMatchObject({
        config: conf,
        added: [],
        removed: [],
        wrappers: { added: ['tcp/27425'], removed: [], reset: [], updated: [] },
        limits: [{ register: 'config', changed: ['maxKeys'], over: [] }],
        needRestart: ['timing.keepaliveMs'], // still: what runs is the old value until a restart
        refused: [],
      });
      const human = await spook('reload');
      expect([human.code, human.out]).toEqual([0, `reloaded ${conf}\nrestart     needed for timing.keepaliveMs\n`]);
      // A file that does not validate: the field named, exit 1, nothing changed.
      writeFileSync(
        conf,
        stringify({ ...next, registers: [{ name: 'config', kind: 'map', maxKeys: 0 }], wrap: { interception: 'off', wrappers: [] } }),
      );
      const bad = await spook('reload');
      expect(bad.code).toBe(1);
      expect(bad.err).toMatch(/^spook: .*registers\.0\.maxKeys: /);
      const list = await spook('--json', 'wrap', 'list');
      expect((JSON.parse(list.out) as { port: number }[]).map((w) => w.port)).toEqual([27425]);
    } finally {
      child.kill('SIGTERM');
      await new Promise((r) => child.once('exit', r));
    }
  }, 60_000);
});
