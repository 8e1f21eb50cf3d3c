/**
 * Review of issue 17: a refused handover state closes each inherited descriptor once. A second
 * close of the same number would close whatever the process (a logger's worker thread, libuv)
 * opened under it in the meantime.
 */
import { describe, expect, it, vi } from 'vitest';
import type { Logger } from 'pino';
import { encodeHandover } from '../core/wrap/handover.js';

const closes: number[] = [];
vi.mock('../drivers/wrap/fdstore.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../drivers/wrap/fdstore.js')>();
  return {
    ...real,
    closeQuietly: (fd: number) => {
      closes.push(fd);
      real.closeQuietly(fd);
    },
  };
});

const { takeHandover, STATE_FDNAME } = await import('../drivers/wrap/handover-store.js');
const { memfdWith } = await import('../drivers/wrap/fdstore.js');

describe('a refused handover state', () => {
  it('closes every inherited descriptor exactly once', () => {
    const good = encodeHandover({ bootId: 5n, peers: [] });
    const state = memfdWith('s', good.subarray(0, good.length - 2));
    const conn = memfdWith('c', Buffer.from('x'));
    const log = { warn: () => {}, info: () => {} } as unknown as Logger;
    closes.length = 0;
    expect(
      takeHandover(log, {}, [
        { fd: conn, name: 'spook-wrap-0' },
        { fd: state, name: STATE_FDNAME },
      ]),
    ).toBeUndefined();
    expect(closes.filter((fd) => fd === state)).toEqual([state]);
    expect(closes.filter((fd) => fd === conn)).toEqual([conn]);
  });
});
