/**
 * The service manager's file-descriptor store (systemd's sd_notify FDSTORE=1 and sd_listen_fds),
 * so that wrapped connections outlive a restart of spookd (docs/OPERATIONS.md, "Restarting
 * spookd under wrapped connections").
 *
 * Node cannot pass descriptors over a unix datagram socket, so sendmsg/recvmsg with SCM_RIGHTS,
 * socket() and memfd_create() go through libc with koffi (as drivers/bpf/libbpf.ts does).
 * Everything here is synchronous and bounded: a notify datagram is sent with a 2 s send timeout.
 * testing/lab/fdstore.ts plays the service manager with the same calls (recvFds).
 */
import koffi from 'koffi';
import { closeSync, fstatSync, readSync, writeSync } from 'node:fs';

const AF_UNIX = 1;
const SOCK_DGRAM = 2;
const SOCK_CLOEXEC = 0o2000000;
const SOCK_NONBLOCK = 0o4000;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const SO_SNDTIMEO = 21;
const MFD_CLOEXEC = 1;
const MSG_NOSIGNAL = 0x4000;
const MSG_DONTWAIT = 0x40;
const MSG_CTRUNC = 0x8;
/** The kernel's SCM_MAX_FD: descriptors in one SCM_RIGHTS message. */
export const MAX_FDS_PER_MESSAGE = 253;
/** FDNAME values (systemd: at most 255 printable characters, no ':'). */
const FDNAME_RE = /^[\x21-\x39\x3b-\x7e]{1,255}$/;

interface Libc {
  socket: (domain: number, type: number, proto: number) => number;
  bind: (fd: number, addr: Buffer, len: number) => number;
  setsockopt: (fd: number, level: number, name: number, val: Buffer, len: number) => number;
  sendmsg: (fd: number, msg: Buffer, flags: number) => number;
  recvmsg: (fd: number, msg: Buffer, flags: number) => number;
  close: (fd: number) => number;
  memfd: (name: string, flags: number) => number;
  fcntl: (fd: number, cmd: number, arg: number) => number;
}

let libc: Libc | undefined;
function lib(): Libc {
  if (libc) return libc;
  const l = koffi.load('libc.so.6');
  libc = {
    socket: l.func('int socket(int domain, int type, int protocol)') as Libc['socket'],
    bind: l.func('int bind(int fd, const void *addr, uint32_t len)') as Libc['bind'],
    setsockopt: l.func('int setsockopt(int fd, int level, int optname, const void *optval, uint32_t optlen)') as Libc['setsockopt'],
    // The msghdr is built by hand in a Buffer (pointers from koffi.alloc): koffi passes a Buffer as is.
    sendmsg: l.func('intptr_t sendmsg(int fd, const void *msg, int flags)') as Libc['sendmsg'],
    recvmsg: l.func('intptr_t recvmsg(int fd, void *msg, int flags)') as Libc['recvmsg'],
    close: l.func('int close(int fd)') as Libc['close'],
    memfd: l.func('int memfd_create(const char *name, unsigned int flags)') as Libc['memfd'],
    fcntl: l.func('int fcntl(int fd, int cmd, int arg)') as Libc['fcntl'],
  };
  return libc;
}

function errnoText(what: string): Error {
  const e = koffi.errno();
  const name = Object.entries(koffi.os.errno).find(([, v]) => v === e)?.[0] ?? `errno ${e}`;
  return new Error(`${what}: ${name}`);
}

/** struct sockaddr_un for a path (a leading '@' is the abstract namespace, as systemd writes it). */
function sockaddrUn(path: string): Buffer {
  const p = Buffer.from(path.startsWith('@') ? `\0${path.slice(1)}` : path);
  if (p.length >= 108) throw new Error(`NOTIFY_SOCKET path is ${p.length} bytes, at most 107`);
  const b = Buffer.alloc(2 + p.length + (path.startsWith('@') ? 0 : 1));
  b.writeUInt16LE(AF_UNIX, 0);
  p.copy(b, 2);
  return b;
}

/** Native memory holding `len` bytes (koffi.alloc), its address and a view to read and write it. */
function native(len: number): { ptr: unknown; addr: bigint; bytes: Uint8Array } {
  const ptr = koffi.alloc('uint8_t', Math.max(1, len));
  return { ptr, addr: koffi.address(ptr), bytes: new Uint8Array(koffi.view(ptr, Math.max(1, len))) };
}

const CMSG_HDR = 16; // struct cmsghdr { size_t len; int level; int type; } on 64-bit Linux
const cmsgSpace = (fds: number): number => CMSG_HDR + Math.ceil((4 * fds) / 8) * 8;

/** struct msghdr (56 bytes on 64-bit Linux) over native iovec/control memory. */
function msghdr(
  name: { addr: bigint; len: number } | undefined,
  iov: { addr: bigint; len: number },
  control: { addr: bigint; len: number },
  /** The native blocks the addresses point into: kept alive as long as the header (the call's argument). */
  keep: unknown[],
): Buffer {
  const iovec = native(16);
  const v = Buffer.from(iovec.bytes.buffer, iovec.bytes.byteOffset, 16);
  v.writeBigUInt64LE(iov.addr, 0);
  v.writeBigUInt64LE(BigInt(iov.len), 8);
  const m = Buffer.alloc(56);
  m.writeBigUInt64LE(name?.addr ?? 0n, 0);
  m.writeUInt32LE(name?.len ?? 0, 8);
  m.writeBigUInt64LE(iovec.addr, 16);
  m.writeBigUInt64LE(1n, 24);
  m.writeBigUInt64LE(control.len ? control.addr : 0n, 32);
  m.writeBigUInt64LE(BigInt(control.len), 40);
  // Keep the iovec's memory, and the blocks it and the header point into, alive as long as the header
  // (koffi frees a block when it is collected; V8 may collect a local that is no longer used).
  (m as Buffer & { keep?: unknown }).keep = [iovec.ptr, ...keep];
  return m;
}

/** Send one notify datagram with `fds` attached (SCM_RIGHTS). Throws with the errno's name. */
export function notify(socketPath: string, message: string, fds: number[] = []): void {
  if (fds.length > MAX_FDS_PER_MESSAGE) throw new Error(`${fds.length} descriptors in one message, at most ${MAX_FDS_PER_MESSAGE}`);
  const c = lib();
  const sock = c.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (sock < 0) throw errnoText('socket(AF_UNIX)');
  try {
    const tv = Buffer.alloc(16);
    tv.writeBigInt64LE(2n, 0); // a service manager that does not read for 2 s: give up, never hang the stop
    c.setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, tv, 16);
    const addrBuf = sockaddrUn(socketPath);
    const addr = native(addrBuf.length);
    addr.bytes.set(addrBuf);
    const body = Buffer.from(message);
    const data = native(body.length);
    data.bytes.set(body);
    const ctl = native(fds.length ? cmsgSpace(fds.length) : 0);
    if (fds.length) {
      const cb = Buffer.from(ctl.bytes.buffer, ctl.bytes.byteOffset, cmsgSpace(fds.length));
      cb.fill(0);
      cb.writeBigUInt64LE(BigInt(CMSG_HDR + 4 * fds.length), 0);
      cb.writeInt32LE(SOL_SOCKET, 8);
      cb.writeInt32LE(SCM_RIGHTS, 12);
      fds.forEach((fd, i) => cb.writeInt32LE(fd, CMSG_HDR + 4 * i));
    }
    const m = msghdr(
      { addr: addr.addr, len: addrBuf.length },
      { addr: data.addr, len: body.length },
      { addr: ctl.addr, len: fds.length ? cmsgSpace(fds.length) : 0 },
      [addr.ptr, data.ptr, ctl.ptr],
    );
    if (c.sendmsg(sock, m, MSG_NOSIGNAL) < 0) throw errnoText(`sendmsg to ${socketPath}`);
  } finally {
    c.close(sock);
  }
}

/** A unix datagram socket bound at `path` that receives notify messages (the lab's service manager). */
export function bindNotifySocket(path: string): number {
  const c = lib();
  const sock = c.socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (sock < 0) throw errnoText('socket(AF_UNIX)');
  const a = sockaddrUn(path);
  if (c.bind(sock, a, a.length) < 0) {
    c.close(sock);
    throw errnoText(`bind ${path}`);
  }
  return sock;
}

/** One datagram from a non-blocking notify socket with its descriptors, or undefined when none waits. */
export function recvFds(sock: number): { message: string; fds: number[] } | undefined {
  const c = lib();
  const data = native(4096);
  const ctlLen = cmsgSpace(MAX_FDS_PER_MESSAGE);
  const ctl = native(ctlLen);
  const m = msghdr(undefined, { addr: data.addr, len: 4096 }, { addr: ctl.addr, len: ctlLen }, [data.ptr, ctl.ptr]);
  const n = Number(c.recvmsg(sock, m, MSG_DONTWAIT | 0x40000000 /* MSG_CMSG_CLOEXEC */));
  if (n < 0) return undefined;
  const fds: number[] = [];
  const cb = Buffer.from(ctl.bytes.buffer, ctl.bytes.byteOffset, ctlLen);
  const used = Number(m.readBigUInt64LE(40));
  for (let at = 0; at + CMSG_HDR <= used;) {
    const len = Number(cb.readBigUInt64LE(at));
    if (len < CMSG_HDR) break;
    if (cb.readInt32LE(at + 8) === SOL_SOCKET && cb.readInt32LE(at + 12) === SCM_RIGHTS)
      for (let i = at + CMSG_HDR; i + 4 <= at + len; i += 4) fds.push(cb.readInt32LE(i));
    at += Math.ceil(len / 8) * 8;
  }
  if (m.readInt32LE(48) & MSG_CTRUNC) throw new Error('notify message with more descriptors than fit: truncated');
  return { message: Buffer.from(data.bytes.subarray(0, n)).toString(), fds };
}

export function closeFd(fd: number): void {
  lib().close(fd);
}

/** An anonymous memory file holding `data` (memfd_create), its offset back at 0. */
export function memfdWith(name: string, data: Uint8Array): number {
  const fd = lib().memfd(name, MFD_CLOEXEC);
  if (fd < 0) throw errnoText('memfd_create');
  for (let at = 0; at < data.length;) at += writeSync(fd, data, at, data.length - at, at);
  return fd;
}

/** The whole content of a descriptor (a memfd), refused past `max` bytes. */
export function readWhole(fd: number, max: number): Uint8Array {
  const size = fstatSync(fd).size;
  if (size > max) throw new Error(`the handover state is ${size} bytes, at most ${max}`);
  const b = new Uint8Array(size);
  for (let at = 0; at < size;) {
    const n = readSync(fd, b, at, size - at, at);
    if (n <= 0) throw new Error(`the handover state ended at ${at} of ${size} bytes`);
    at += n;
  }
  return b;
}

/**
 * Where the service manager listens and how many descriptors it stores for us: systemd ≥ 254 sets
 * $FDSTORE to FileDescriptorStoreMax=; older ones do not, and the unit says it in $SPOOK_FDSTORE.
 */
export function fdStore(env: NodeJS.ProcessEnv = process.env): { socket: string; max: number } | undefined {
  const socket = env.NOTIFY_SOCKET;
  const max = Number(env.FDSTORE ?? env.SPOOK_FDSTORE ?? 0);
  if (!socket || !Number.isSafeInteger(max) || max <= 0) return undefined;
  return { socket, max };
}

/** sd_notify, best effort: false (and nothing thrown) without a NOTIFY_SOCKET or when it fails. */
export function sdNotify(message: string, env: NodeJS.ProcessEnv = process.env): boolean {
  if (!env.NOTIFY_SOCKET) return false;
  try {
    notify(env.NOTIFY_SOCKET, message);
    return true;
  } catch {
    return false;
  }
}

/**
 * Store descriptors, one message per name (FDNAME names every descriptor of its message).
 * FDPOLL=0: systemd would otherwise drop a socket it sees POLLHUP on (a connection both ends
 * had half-closed, its last ACK still due), and the next process would lose it unannounced.
 */
export function storeFds(socket: string, entries: { name: string; fd: number }[]): void {
  for (const e of entries) {
    if (!FDNAME_RE.test(e.name)) throw new Error(`FDNAME ${JSON.stringify(e.name)}: printable, no ':', at most 255`);
    notify(socket, `FDSTORE=1\nFDPOLL=0\nFDNAME=${e.name}\n`, [e.fd]);
  }
}

/**
 * Descriptors passed at start (sd_listen_fds semantics: from 3, LISTEN_PID must be ours), with
 * their LISTEN_FDNAMES; the variables are removed so that a child never takes them for its own.
 */
export function takeListenFds(env: NodeJS.ProcessEnv = process.env, pid = process.pid): { fd: number; name: string }[] {
  const n = Number(env.LISTEN_FDS ?? 0);
  const forUs = env.LISTEN_PID !== undefined && Number(env.LISTEN_PID) === pid;
  const names = (env.LISTEN_FDNAMES ?? '').split(':');
  delete env.LISTEN_FDS;
  delete env.LISTEN_PID;
  delete env.LISTEN_FDNAMES;
  if (!forUs || !Number.isSafeInteger(n) || n <= 0 || n > 65536) return [];
  const F_SETFD = 2;
  const FD_CLOEXEC = 1;
  // As sd_listen_fds: close-on-exec, so that no child of ours ever holds a connection open.
  for (let i = 0; i < n; i++) lib().fcntl(3 + i, F_SETFD, FD_CLOEXEC);
  return Array.from({ length: n }, (_, i) => ({ fd: 3 + i, name: names[i] ?? 'unknown' }));
}

/** Close a descriptor we do not use (from the store). */
export function closeQuietly(fd: number): void {
  try {
    closeSync(fd);
  } catch {
    // already closed
  }
}
