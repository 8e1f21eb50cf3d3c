/**
 * storeHandover's order (drivers/wrap/handover-store.ts): the state before the sockets, since a
 * store smaller than spookd was told keeps the first descriptors and closes the rest (systemd 252,
 * test/e2e/wrap-systemd.test.ts); and a failure part-way takes back what was stored.
 */
import { describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { storeHandover } from '../drivers/wrap/handover-store.js';
import { bindNotifySocket, closeFd, memfdWith, recvFds } from '../drivers/wrap/fdstore.js';

function withNotifySocket(f: (path: string, drain: () => { message: string; fds: number[] }[]) => void): void {
  const dir = mkdtempSync(join(tmpdir(), 'spk-fdorder-'));
  const path = join(dir, 'notify');
  const sock = bindNotifySocket(path);
  const got: { message: string; fds: number[] }[] = [];
  try {
    f(path, () => {
      for (let m = recvFds(sock); m; m = recvFds(sock)) got.push(m);
      return got;
    });
  } finally {
    for (const m of got) m.fds.forEach(closeFd);
    closeFd(sock);
    rmSync(dir, { recursive: true, force: true });
  }
}

const names = (ms: { message: string }[]): string[] => ms.map((m) => m.message.replace(/\n/g, ' ').trim());

describe('storeHandover', () => {
  it('stores the state first, then each socket by index', () => {
    withNotifySocket((path, drain) => {
      const a = memfdWith('a', Buffer.from('a'));
      const b = memfdWith('b', Buffer.from('b'));
      storeHandover(path, { bootId: 7n, peers: [] }, [a, b]);
      closeFd(a);
      closeFd(b);
      const ms = drain();
      expect(names(ms)).toEqual([
        'FDSTORE=1 FDPOLL=0 FDNAME=spook-wrap-state',
        'FDSTORE=1 FDPOLL=0 FDNAME=spook-wrap-0',
        'FDSTORE=1 FDPOLL=0 FDNAME=spook-wrap-1',
      ]);
      expect(ms.map((m) => m.fds.length)).toEqual([1, 1, 1]);
    });
  });

  it('takes back what it stored when a socket cannot be stored', () => {
    withNotifySocket((path, drain) => {
      const a = memfdWith('a', Buffer.from('a'));
      // A descriptor number nothing holds: sendmsg fails (EBADF) on the second socket.
      expect(() => storeHandover(path, { bootId: 7n, peers: [] }, [a, 1_000_000])).toThrow(/sendmsg/);
      closeFd(a);
      expect(names(drain())).toEqual([
        'FDSTORE=1 FDPOLL=0 FDNAME=spook-wrap-state',
        'FDSTORE=1 FDPOLL=0 FDNAME=spook-wrap-0',
        'FDSTOREREMOVE=1 FDNAME=spook-wrap-state',
        'FDSTOREREMOVE=1 FDNAME=spook-wrap-0',
      ]);
    });
  });
});
