/** sd_notify with SCM_RIGHTS through koffi (drivers/wrap/fdstore.ts): what the lab's service manager receives. */
import { describe, expect, it } from 'vitest';
import { fstatSync, mkdtempSync } from 'node:fs';
import type { Logger } from 'pino';
import { encodeHandover } from '../core/wrap/handover.js';
import { connFdName, STATE_FDNAME, takeHandover } from '../drivers/wrap/handover-store.js';
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
      expect(m1.message).toBe('FDSTORE=1\nFDPOLL=0\nFDNAME=spook-wrap-0\n');
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

describe('taking a handover at start', () => {
  const log = (): { log: Logger; warnings: string[] } => {
    const warnings: string[] = [];
    const l = { warn: (o: object, m: string) => warnings.push(`${m} ${JSON.stringify(o)}`), info: () => {} } as unknown as Logger;
    return { log: l, warnings };
  };
  const closed = (fd: number): boolean => {
    try {
      fstatSync(fd);
      return false;
    } catch {
      return true;
    }
  };

  it('a corrupt state: a warning naming the field, every descriptor closed and removed from the store, a fresh start', () => {
    const path = join(mkdtempSync(join(tmpdir(), 'spk-fdstore-')), 'notify');
    const sock = bindNotifySocket(path);
    try {
      const good = encodeHandover({ bootId: 5n, peers: [] });
      const state = memfdWith('s', good.subarray(0, good.length - 2));
      const conn = memfdWith('c', Buffer.from('x'));
      const { log: l, warnings } = log();
      const got = takeHandover(l, { NOTIFY_SOCKET: path }, [
        { fd: conn, name: 'spook-wrap-0' },
        { fd: state, name: STATE_FDNAME },
      ]);
      expect(got).toBeUndefined();
      expect(warnings.join()).toMatch(/handover refused.*handover state: peers: truncated/);
      expect(closed(conn) && closed(state)).toBe(true);
      const removed = [recvFds(sock)!.message, recvFds(sock)!.message];
      expect(removed).toEqual(['FDSTOREREMOVE=1\nFDNAME=spook-wrap-0\n', `FDSTOREREMOVE=1\nFDNAME=${STATE_FDNAME}\n`]);
    } finally {
      closeFd(sock);
    }
  });

  it('a valid state: its bootId and the sockets by index; descriptors not ours are left alone', () => {
    const state = memfdWith('s', encodeHandover({ bootId: 5n, peers: [] }));
    const conn = memfdWith('c', Buffer.from('x'));
    const other = memfdWith('o', Buffer.from('y'));
    const { log: l, warnings } = log();
    const got = takeHandover(l, {}, [
      { fd: conn, name: connFdName(3) },
      { fd: other, name: 'someone-else' },
      { fd: state, name: STATE_FDNAME },
    ]);
    expect(warnings).toEqual([]);
    expect(got?.state.bootId).toBe(5n);
    expect([...got!.fds]).toEqual([[3, conn]]);
    expect(closed(state)).toBe(true);
    expect(closed(other)).toBe(false);
    closeFd(conn);
    closeFd(other);
  });

  it('sockets without a state are closed: a fresh start', () => {
    const conn = memfdWith('c', Buffer.from('x'));
    const { log: l, warnings } = log();
    expect(takeHandover(l, {}, [{ fd: conn, name: connFdName(0) }])).toBeUndefined();
    expect(warnings.join()).toMatch(/without a state/);
    expect(closed(conn)).toBe(true);
  });
});
