import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { Lab, ROOT, until } from '../../testing/lab/netns.js';
import { openRegister, SpookError, type Outcome, type RegisterHandle } from '../../client/index.js';
import { portBase } from '../ports.js';

/**
 * The library against real spookd processes in two network namespaces (created and always
 * removed by the test): one register handle lives through kill -9 and a restart of its spookd,
 * and every write it was told is committed is there afterwards, at both ends. Then the example
 * application (examples/config-mirror) on both hosts: mirrors kept by scan + watch, across a
 * kill -9 of one host's spookd.
 */
let lab: Lab;
/** The example apps' HTTP ports (+0, +1): they run in the host's namespace, not the lab's, so ports of their own. */
const MIRROR = portBase('e2e/library.test.ts');

beforeAll(async () => {
  lab = new Lab(['a', 'b'], [{ a: 'a', b: 'b', subnet: 81 }], 47900);
  for (const h of ['a', 'b']) lab.configure(h, [{ name: 'config', kind: 'map', policy: 'buffer', maxPending: 4096 }], { logLevel: 'info' });
  await Promise.all(['a', 'b'].map((h) => lab.start(h)));
}, 60_000);

afterAll(async () => {
  await lab?.destroy();
}, 30_000);

describe('the library across kill -9 of its spookd', () => {
  it('one handle keeps working after kill -9 and restart; every committed write survives at both ends; no call hangs', async () => {
    const reg: RegisterHandle = await openRegister('config', { peer: 'b', socket: lab.host('a').socket });
    try {
      await until('entangled', async () => (await reg.set('warmup', '1', { timeoutMs: 2_000 })).verdict === 'committed', 20_000, 200);
      const committed = new Map<string, string>();
      const failures = new Map<string, number>();
      let stop = false;
      let n = 0;
      // 16 writers, each waiting for its outcome; bounded in count and time.
      const deadline = Date.now() + 40_000;
      const writer = async (): Promise<void> => {
        while (!stop && n < 5_000 && Date.now() < deadline) {
          const key = `k${n++}`;
          try {
            const o: Outcome = await reg.set(key, `v-${key}`, { timeoutMs: 5_000 });
            if (o.verdict === 'committed') committed.set(key, `v-${key}`);
          } catch (e) {
            // The daemon died under the call: it ends with a code, never hangs and never claims success.
            expect(e).toBeInstanceOf(SpookError);
            const code = (e as SpookError).code;
            expect(['connection-closed', 'timeout', 'daemon-not-running']).toContain(code);
            failures.set(code, (failures.get(code) ?? 0) + 1);
          }
        }
      };
      const work = Promise.all(Array.from({ length: 16 }, writer));
      await until('some commits', async () => committed.size >= 50, 20_000, 20);
      await lab.kill9('a');
      const atKill = committed.size;
      await lab.start('a');
      await until('commits after the restart, on the same handle', async () => committed.size >= atKill + 50, 30_000, 50);
      stop = true;
      await work;
      expect(failures.size, 'calls in flight at the kill ended with a code').toBeGreaterThan(0);
      // Nothing promised is lost: every write reported committed is readable at both ends.
      const other = await openRegister('config', { peer: 'a', socket: lab.host('b').socket });
      try {
        for (const [key, value] of committed) {
          expect((await reg.get(key)).value, `${key} at a`).toBe(value);
          await until(`${key} at b`, async () => (await other.get(key)).value === value, 10_000, 50);
        }
      } finally {
        other.close();
      }
    } finally {
      reg.close();
    }
  }, 120_000);
});

/** The example application on `host`, serving HTTP on `port` (killed by the test's end). */
function mirrorApp(host: string, peer: string, port: number): { proc: ChildProcess; log: () => string } {
  const proc = spawn(
    process.execPath,
    [join(ROOT, 'examples/config-mirror/mirror.mjs'), '--socket', lab.host(host).socket, '--peer', peer, '--port', String(port)],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let log = '';
  proc.stderr!.on('data', (b: Buffer) => (log += b.toString()));
  return { proc, log: () => log };
}

async function http(port: number, method: string, path: string, body?: string): Promise<{ status: number; json: Record<string, unknown> }> {
  const r = await fetch(`http://127.0.0.1:${port}${path}`, { method, body, signal: AbortSignal.timeout(20_000) });
  return { status: r.status, json: (await r.json()) as Record<string, unknown> };
}

describe('the example application (examples/config-mirror)', () => {
  it('two mirrors kept by scan + watch agree with the register, through kill -9 and restart of one spookd', async () => {
    const [portA, portB] = [MIRROR, MIRROR + 1];
    const apps = [mirrorApp('a', 'b', portA), mirrorApp('b', 'a', portB)];
    try {
      const mirror = async (port: number): Promise<{ version: number; entries: Record<string, string> } | undefined> => {
        try {
          return (await http(port, 'GET', '/config')).json as { version: number; entries: Record<string, string> };
        } catch {
          return undefined; // not listening yet
        }
      };
      await until('both apps serving', async () => (await mirror(portA)) && (await mirror(portB)), 20_000, 100);
      // A write at a shows in b's mirror.
      expect((await http(portA, 'PUT', '/config/color', 'blue')).status).toBe(200);
      await until('b mirrors color', async () => (await mirror(portB))?.entries.color === 'blue', 10_000, 50);
      // b's spookd dies and comes back; a keeps writing meanwhile. b's app is never restarted.
      await lab.kill9('b');
      // Concurrent: where a is the pair's follower each stays pending (202) for spookd's 10 s wait.
      const puts = await Promise.all(Array.from({ length: 20 }, (_, i) => http(portA, 'PUT', `/config/k${i}`, `v${i}`)));
      for (const p of puts) expect([200, 202]).toContain(p.status);
      expect((await http(portA, 'DELETE', '/config/color')).status).toBeLessThan(300);
      await lab.start('b');
      const want = async (): Promise<Record<string, string>> => {
        const reg = await openRegister('config', { peer: 'b', socket: lab.host('a').socket });
        try {
          const all = await reg.scanAll('');
          return Object.fromEntries(all.entries.map((e) => [e.key, e.value ?? '']));
        } finally {
          reg.close();
        }
      };
      await until(
        "both mirrors equal a's register",
        async () => {
          const [w, ma, mb] = await Promise.all([want(), mirror(portA), mirror(portB)]);
          return (
            ma !== undefined &&
            mb !== undefined &&
            JSON.stringify(ma.entries) === JSON.stringify(w) &&
            JSON.stringify(mb.entries) === JSON.stringify(w)
          );
        },
        30_000,
        200,
      );
      const mb = (await mirror(portB))!;
      expect(mb.entries.k19).toBe('v19');
      expect(mb.entries.color).toBeUndefined();
      // The same processes throughout: b's app rode through its spookd's death on the library alone.
      for (const x of apps) expect(x.proc.exitCode, x.log()).toBeNull();
    } finally {
      for (const a of apps) a.proc.kill('SIGKILL');
    }
  }, 120_000);
});
