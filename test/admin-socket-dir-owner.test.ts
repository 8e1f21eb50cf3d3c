import { afterAll, describe, expect, it, vi } from 'vitest';
import { chmodSync, chownSync, mkdirSync, mkdtempSync, renameSync, rmSync, statSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Spookd } from '../drivers/daemon/spookd.js';
import { startSoloSpookd } from './admin-solo.js';

/**
 * The admin socket is bound, then given its group and mode by path (chown, chmod: both follow a
 * symlink). In a directory another user can write (an `adminSocket` under /tmp/spook that user made,
 * or a directory of mode 0777), that user renames the new socket away in between and puts a symlink
 * to any file in its place: spookd (root) then gives that file to adminGroup, mode 0660 (/etc/shadow:
 * root for the group). The user's step is made here, deterministically, right after the bind, where a
 * racing process would make it. spookd refuses such a directory at start, its parents too.
 */
const ATTACK = { on: false, victim: '' };
vi.mock('node:net', async (importOriginal) => {
  const net = await importOriginal<typeof import('node:net')>();
  const createServer = ((...a: Parameters<typeof net.createServer>) => {
    const server = net.createServer(...a);
    const listen = server.listen.bind(server) as (...x: unknown[]) => typeof server;
    server.listen = ((...args: unknown[]) => {
      const [path, cb] = args;
      if (!ATTACK.on || typeof path !== 'string' || typeof cb !== 'function') return listen(...args);
      return listen(path, () => {
        // The other user, in its directory: the socket moved away, a symlink to the victim in its place.
        renameSync(path, `${path}.moved`);
        symlinkSync(ATTACK.victim, path);
        (cb as () => void)();
      });
    }) as typeof server.listen;
    return server;
  }) as typeof net.createServer;
  return { ...net, createServer, default: { ...net, createServer } };
});

const dir = mkdtempSync(join(tmpdir(), 'spook-sockdir-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("the admin socket's directory", { timeout: 30_000 }, () => {
  it.runIf(process.getuid?.() === 0)(
    'writable by another user: refused at start, and no file of the system is given to adminGroup',
    async () => {
      const cases = {
        'mode 0777': (d: string) => chmodSync(d, 0o777),
        "another user's": (d: string) => chownSync(d, 65534, 65534),
      };
      const seen: Record<string, string> = {};
      for (const [name, make] of Object.entries(cases)) {
        const base = mkdtempSync(join(dir, 'case-'));
        const victim = join(base, 'shadow');
        writeFileSync(victim, 'root:secret\n', { mode: 0o600 });
        const run = join(base, 'run');
        mkdirSync(run, { mode: 0o755 });
        make(run);
        ATTACK.on = true;
        ATTACK.victim = victim;
        let d: Spookd | undefined;
        let refused = '';
        try {
          d = await startSoloSpookd(base, join(run, 'admin.sock'), { adminGroup: 4242 });
        } catch (e) {
          refused = (e as Error).message;
        } finally {
          ATTACK.on = false;
          await d?.stop();
        }
        const st = statSync(victim);
        seen[name] =
          `victim mode 0${(st.mode & 0o777).toString(8)} gid ${st.gid}; ${refused ? `refused: ${refused.slice(0, 60)}` : 'started'}`;
      }
      console.log(seen);
      for (const [name, s] of Object.entries(seen))
        expect({ [name]: s }).toEqual({ [name]: expect.stringMatching(/^victim mode 0600 gid 0; refused: adminSocket: /) });
    },
  );
});
