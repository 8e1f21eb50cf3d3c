import { afterAll, describe, expect, it, vi } from 'vitest';
import { chmodSync, mkdirSync, mkdtempSync, renameSync, rmSync, statSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Spookd } from '../drivers/daemon/spookd.js';
import { startSoloSpookd } from './admin-solo.js';

/**
 * The admin socket's directory is checked at start (refuseOpenSocketDir: none another user owns or
 * can write, its parents neither), then the socket is bound and given its group and mode by path.
 * The check walked the directory as resolved (realpath) only: a path that goes through a symlink
 * in a directory another user can write (`adminSocket: /srv/shared/spook/admin.sock`, `spook` a
 * link to /run/spook, /srv/shared mode 0777) passed, and that user re-pointed the link at a
 * directory of its own after the check: there the socket was moved away and a symlink to any file
 * put in its place, which spookd (root) gave to adminGroup, mode 0660. The user's steps are made
 * here deterministically, around the bind, where a racing process would make them. Every directory an
 * entry on the way is in is checked now, each link followed (a link to a link in such a directory too).
 */
const ATTACK = { on: false, link: '', own: '', victim: '' };
vi.mock('node:net', async (importOriginal) => {
  const net = await importOriginal<typeof import('node:net')>();
  const createServer = ((...a: Parameters<typeof net.createServer>) => {
    const server = net.createServer(...a);
    const listen = server.listen.bind(server) as (...x: unknown[]) => typeof server;
    server.listen = ((...args: unknown[]) => {
      const [path, cb] = args;
      if (!ATTACK.on || typeof path !== 'string' || typeof cb !== 'function') return listen(...args);
      // After the check: the link now leads to the other user's directory.
      unlinkSync(ATTACK.link);
      symlinkSync(ATTACK.own, ATTACK.link);
      return listen(path, () => {
        // In its directory: the socket moved away, a symlink to the victim in its place.
        renameSync(path, `${path}.moved`);
        symlinkSync(ATTACK.victim, path);
        (cb as () => void)();
      });
    }) as typeof server.listen;
    return server;
  }) as typeof net.createServer;
  return { ...net, createServer, default: { ...net, createServer } };
});

const dir = mkdtempSync(join(tmpdir(), 'spook-sockdir-link-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("the admin socket's directory, reached through a symlink", { timeout: 30_000 }, () => {
  it.runIf(process.getuid?.() === 0)(
    'a link in a directory every user can write: refused at start, no file given to adminGroup',
    async () => {
      const seen: Record<string, string> = {};
      // The socket's path: base/shared/spook/admin.sock, `spook` a link to root's base/run.
      seen['a link in it'] = await attempt((base, shared, safe) => {
        const link = join(shared, 'spook');
        symlinkSync(safe, link);
        return { path: join(link, 'admin.sock'), link };
      });
      // The path as written and as resolved are both root's: base/run2/spook -> base/shared/hop -> base/run.
      seen['a link to a link in it'] = await attempt((base, shared, safe) => {
        const hop = join(shared, 'hop');
        symlinkSync(safe, hop);
        const run2 = join(base, 'run2');
        mkdirSync(run2, { mode: 0o755 });
        symlinkSync(hop, join(run2, 'spook'));
        return { path: join(run2, 'spook', 'admin.sock'), link: hop };
      });
      console.log(seen);
      // main: "victim mode 0660 gid 4242; started" for both
      for (const [name, v] of Object.entries(seen))
        expect({ [name]: v }).toEqual({
          [name]: expect.stringMatching(/^victim mode 0600 gid 0; refused: adminSocket: directory .*shared is writable by every user/),
        });
    },
  );
});

/** One start of spookd with its socket where `make` says, the other user's steps around the bind; what became of the victim. */
async function attempt(make: (base: string, shared: string, safe: string) => { path: string; link: string }): Promise<string> {
  const base = mkdtempSync(join(dir, 'case-'));
  const victim = join(base, 'shadow');
  writeFileSync(victim, 'root:secret\n', { mode: 0o600 });
  const safe = join(base, 'run'); // root's, 0755: passes the check
  mkdirSync(safe, { mode: 0o755 });
  const shared = join(base, 'shared'); // every user's
  mkdirSync(shared, { mode: 0o755 });
  chmodSync(shared, 0o777);
  const own = join(shared, 'own'); // the other user's directory
  mkdirSync(own, { mode: 0o755 });
  const { path, link } = make(base, shared, safe);
  Object.assign(ATTACK, { on: true, link, own, victim });
  let d: Spookd | undefined;
  let refused = '';
  try {
    d = await startSoloSpookd(base, path, { adminGroup: 4242 });
  } catch (e) {
    refused = (e as Error).message;
  } finally {
    ATTACK.on = false;
    await d?.stop();
  }
  const st = statSync(victim);
  return `victim mode 0${(st.mode & 0o777).toString(8)} gid ${st.gid}; ${refused ? `refused: ${refused.slice(0, 160)}` : 'started'}`;
}
