/**
 * SO_LINGER on a wrapped connection's local socket, so that an abnormal end is a reset even
 * when spookd cannot say so itself (PROTOCOL §16.5.7). While a connection is carried its
 * sockets linger 0: if spookd dies (kill -9, a crash), the kernel closes them with RST, and
 * the client and the server see a reset instead of a clean end-of-file. Before an orderly
 * FIN the option is cleared again, so that a normal close delivers every byte.
 * Node exposes only resetAndDestroy() (linger 0 at close time); the option itself goes
 * through libc, as the BPF hooks do. Where that is unavailable nothing is set (best effort).
 */
import type { Socket } from 'node:net';
import koffi from 'koffi';

const SOL_SOCKET = 1;
const SO_LINGER = 13;

type SetSockOpt = (fd: number, level: number, name: number, val: Buffer, len: number) => number;
let setsockopt: SetSockOpt | null | undefined;

function call(): SetSockOpt | null {
  if (setsockopt !== undefined) return setsockopt;
  try {
    setsockopt = koffi
      .load('libc.so.6')
      .func('int setsockopt(int fd, int level, int optname, const void *optval, uint32_t optlen)') as SetSockOpt;
  } catch {
    setsockopt = null;
  }
  return setsockopt;
}

/** The socket's file descriptor, when Node has one (a connected TCP socket on Unix). */
export function fdOf(socket: Socket): number | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/** struct linger { int l_onoff; int l_linger; } */
function set(socket: Socket, on: boolean): boolean {
  const f = call();
  const fd = fdOf(socket);
  if (!f || fd === undefined) return false;
  const v = Buffer.alloc(8);
  v.writeInt32LE(on ? 1 : 0, 0);
  v.writeInt32LE(0, 4);
  return f(fd, SOL_SOCKET, SO_LINGER, v, 8) === 0;
}

/** While carried: a close by the kernel (spookd gone) is a reset. */
export const resetOnClose = (socket: Socket): boolean => set(socket, true);

/** Before an orderly FIN: a normal close again (every byte delivered). */
export const orderlyClose = (socket: Socket): boolean => set(socket, false);
