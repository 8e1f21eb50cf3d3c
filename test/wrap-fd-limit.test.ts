/**
 * Descriptors are the process's, shared by the wrapped connections of every peer and by the
 * pairs' stores: each connection a peer opens to a server this host may dial costs one here, and
 * the per-peer limit (maxConnections, 1,024 by default) is no bound on their sum. A peer that
 * used them up had the next store open (a snapshot written at once) fail with EMFILE, which
 * fences the pair (store-failed). Wrapped connections now stop at a process-wide cap below the
 * descriptor limit (drivers/wrap/fdlimit.ts), refused and counted, leaving a reserve.
 * Run in a child under `ulimit -n 512` (test/wrap-fd-limit.scenario.ts), the server here.
 */
import { spawn } from 'node:child_process';
import { createServer, type Socket } from 'node:net';
import type { AddressInfo } from 'node:net';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { descriptorRefusal } from '../core/wrap/admission.js';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');

function run(limit: number, port: number, n: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const cmd = `ulimit -n ${limit} && exec "$0" "$@"`;
    const child = spawn(
      'bash',
      ['-c', cmd, join(ROOT, 'node_modules/.bin/vite-node'), join(ROOT, 'test/wrap-fd-limit.scenario.ts'), String(port), String(n)],
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

describe('wrapped connections and the process’s descriptors', () => {
  it('a peer opening 1,024 connections under a limit of 512 descriptors: refused past the cap, the store still writes', async () => {
    const held: Socket[] = [];
    const server = createServer((s) => void (s.on('error', () => undefined), held.push(s)));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as AddressInfo).port;
    try {
      const out = await run(512, port, 1024);
      const r = JSON.parse(out.trim().split('\n').pop()!);
      console.log(JSON.stringify(r));
      expect(r.before).toBeUndefined();
      expect(r.after).toBeUndefined(); // main: "…snapshot: EMFILE: too many open files"
      expect(r.fds).toBeLessThan(512 - 64);
      expect(r.descriptors.refused['too-many-descriptors'] + r.descriptors.refused['descriptor-share']).toBeGreaterThan(0);
      expect(r.held).toBeLessThanOrEqual(r.descriptors.cap);
    } finally {
      for (const s of held) s.destroy();
      server.close();
    }
  }, 30_000);
});

describe('descriptorRefusal: the process-wide cap, shared between peers', () => {
  it('one peer alone stops at 7/8 of the cap; another still gets the reserve; none past the cap', () => {
    let n = 0;
    while (!descriptorRefusal(1000, n, n, n > 0 ? 1 : 0)) n++;
    expect(n).toBe(875);
    expect(descriptorRefusal(1000, 875, 875, 1)).toBe('descriptor-share');
    expect(descriptorRefusal(1000, 875, 0, 1)).toBeUndefined(); // a second peer, in the reserve
    expect(descriptorRefusal(1000, 1000, 0, 1)).toBe('too-many-descriptors');
    // Four peers holding some: in the reserve, one at a quarter or more is refused first, one under admitted.
    expect(descriptorRefusal(1000, 900, 250, 4)).toBe('descriptor-share');
    expect(descriptorRefusal(1000, 900, 249, 4)).toBeUndefined();
    expect(descriptorRefusal(0, 0, 0, 0)).toBe('too-many-descriptors');
  });
});
