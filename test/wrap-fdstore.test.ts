/** sd_notify with SCM_RIGHTS through koffi (drivers/wrap/fdstore.ts): what the lab's service manager receives. */
import { describe, expect, it } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { bindNotifySocket, closeFd, fdStore, memfdWith, readWhole, recvFds, storeFds, takeListenFds } from '../drivers/wrap/fdstore.js';

describe('fdstore I/O', () => {
  it('passes descriptors with their names over the notify socket', () => {
    const path = join(mkdtempSync(join(tmpdir(), 'spk-fdstore-')), 'notify');
    const sock = bindNotifySocket(path);
    try {
      const a = memfdWith('a', Buffer.from('first'));
      const b = memfdWith('b', Buffer.from('second state'));
      storeFds(path, [
        { name: 'spook-wrap-0', fd: a },
        { name: 'spook-wrap-state', fd: b },
      ]);
      closeFd(a);
      closeFd(b);
      const m1 = recvFds(sock)!;
      const m2 = recvFds(sock)!;
      expect(recvFds(sock)).toBeUndefined();
      expect(m1.message).toBe('FDSTORE=1\nFDNAME=spook-wrap-0\n');
      expect(m2.message).toContain('FDNAME=spook-wrap-state');
      expect(Buffer.from(readWhole(m1.fds[0], 100)).toString()).toBe('first');
      expect(Buffer.from(readWhole(m2.fds[0], 100)).toString()).toBe('second state');
      expect(() => readWhole(m2.fds[0], 4)).toThrow(/at most 4/);
      for (const m of [m1, m2]) closeFd(m.fds[0]);
    } finally {
      closeFd(sock);
    }
  });

  it('refuses a name systemd would refuse', () => {
    expect(() => storeFds('/nonexistent', [{ name: 'a:b', fd: 0 }])).toThrow(/FDNAME/);
  });

  it('takes LISTEN_FDS only for its own pid, and clears the variables', () => {
    const env: NodeJS.ProcessEnv = { LISTEN_FDS: '2', LISTEN_PID: '42', LISTEN_FDNAMES: 'x:y' };
    expect(takeListenFds(env, 42)).toEqual([
      { fd: 3, name: 'x' },
      { fd: 4, name: 'y' },
    ]);
    expect(env.LISTEN_FDS).toBeUndefined();
    expect(takeListenFds({ LISTEN_FDS: '2', LISTEN_PID: '41' }, 42)).toEqual([]);
    expect(fdStore({ NOTIFY_SOCKET: '/x' })).toBeUndefined();
    expect(fdStore({ NOTIFY_SOCKET: '/x', FDSTORE: '512' })).toEqual({ socket: '/x', max: 512 });
    expect(fdStore({ NOTIFY_SOCKET: '/x', SPOOK_FDSTORE: '64' })).toEqual({ socket: '/x', max: 64 });
  });
});
