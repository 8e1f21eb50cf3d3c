/**
 * SO_LINGER on a wrapped connection's local socket, so that an abnormal end is a reset even
 * when spookd cannot say so itself (PROTOCOL §16.5.7). While a connection is carried its
 * sockets linger 0: if spookd dies (kill -9, a crash), the kernel closes them with RST, and
 * the client and the server see a reset instead of a clean end-of-file. Before an orderly
 * FIN the option is cleared again, so that a normal close delivers every byte.
 * Node exposes only resetAndDestroy() (linger 0 at close time); the option itself goes
 * through libc, as the BPF hooks do. Where that is unavailable nothing is set (best effort).
 */
import type { Server, Socket } from 'node:net';
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

/** The socket's (or listener's) file descriptor, when Node has one (TCP on Unix). */
export function fdOf(socket: Socket | Server): number | undefined {
  const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
  return typeof fd === 'number' && fd >= 0 ? fd : undefined;
}

/** struct linger { int l_onoff; int l_linger; }: on (linger 0) and off, made once (read-only to the kernel). */
const LINGER_ON = Buffer.from([1, 0, 0, 0, 0, 0, 0, 0]);
const LINGER_OFF = Buffer.alloc(8);

function set(socket: Socket | Server, on: boolean): boolean {
  const f = call();
  const fd = fdOf(socket);
  if (!f || fd === undefined) return false;
  return f(fd, SOL_SOCKET, SO_LINGER, on ? LINGER_ON : LINGER_OFF, 8) === 0;
}

/** While carried: a close by the kernel (spookd gone) is a reset. */
export const resetOnClose = (socket: Socket): boolean => set(socket, true);

/**
 * The same for every socket a listener accepts: the kernel copies a listener's SO_LINGER into
 * each connection it accepts, so one call at listen time replaces one per intercepted
 * connection. False when it could not be set (then each socket is set on its own).
 */
export const listenerResetsOnClose = (server: Server): boolean => set(server, true);

/** Before an orderly FIN: a normal close again (every byte delivered). */
export const orderlyClose = (socket: Socket): boolean => set(socket, false);
