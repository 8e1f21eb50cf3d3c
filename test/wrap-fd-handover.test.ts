/**
 * The process-wide cap on wrapped connections' descriptors (drivers/wrap/manager.ts
 * descriptorCap) across a restart through the descriptor store: the connections handed over are
 * counted as held (adopt), so the descriptors open when the cap is first worked out must not
 * count them a second time. Before, the cap was the limit less everything open, the inherited
 * sockets too, and it is worked out once: a restart with N connections lowered it by N for the
 * life of the process, and with nothing held any more the peer got 7/8 of what was left.
 * Run in a child (test/wrap-fd-handover.scenario.ts) so that the descriptors it counts are its own.
 */
import { spawn } from 'node:child_process';
import { createServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

function run(port: number, n: number, x: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(
      join(ROOT, 'node_modules/.bin/vite-node'),
      [join(ROOT, 'test/wrap-fd-handover.scenario.ts'), String(port), String(n), String(x)],
      { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.on('error', reject);
    child.on('close', (code) => (code === 0 ? resolve(out) : reject(new Error(`scenario exited ${code}: ${err}`))));
  });
}

describe('the descriptor cap across a handover', () => {
  it('60 connections handed over, the limit 100 above what was open before: the cap stays 100, not 40', async () => {
    const held: Socket[] = [];
    const server = createServer((s) => void (s.on('error', () => undefined), held.push(s)));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    try {
      const r = JSON.parse((await run(port, 60, 100)).trim().split('\n').pop()!);
      console.log(JSON.stringify(r));
      expect(r.inherited).toBe(60);
      expect(r.afterFirst.cap).toBeGreaterThanOrEqual(95); // main: 40 (100 less the 60 inherited, counted held too)
      expect(r.afterReset.held).toBe(r.afterReset.conns); // every descriptor released with its connection
      // With the inherited ones gone, the one peer gets 7/8 of the cap again: main 35.
      expect(r.afterSecond.conns).toBeGreaterThanOrEqual(80);
      expect(r.afterSecond.held).toBe(r.afterSecond.conns);
    } finally {
      for (const s of held) s.destroy();
      server.close();
    }
  }, 30_000);
});
