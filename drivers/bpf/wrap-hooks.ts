/**
 * The wrappers' interception hooks (bpf/spook_wrap.c) from the control plane: connect()
 * to a wrapped port anywhere in spookd's network namespace lands on spookd's proxy
 * listener on loopback, and the proxy asks originalDst({ address, port }) of the accepted
 * socket's remote end (the client: its address and port, never the port alone) where the
 * client meant to go. The programs are attached to the cgroup-v2 root through bpf_links that are never
 * pinned: when spookd exits, even on kill -9, the links close and connections go direct.
 *
 * UDP (IPv4 and IPv6, with udpProxyPort): connects (of bound sockets, and of unbound ones,
 * which the hook binds) and unconnected sends to a UDP-wrapped port land on the UDP proxy
 * sockets (127.0.0.1 and [::1] on udpProxyPort); originalUdpDst(rinfo) says where the client
 * meant to go, and replies from the proxy reach the client with that destination as their source.
 */
import { closeSync, constants, existsSync, mkdtempSync, openSync, readFileSync, rmdirSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { isIPv4, isIPv6, SocketAddress } from 'node:net';
import { ipv6Bytes } from '../../wire/wrap.js';
import {
  CLIENT_KEY,
  ORIG_DST,
  ORIG_FLAG_UID,
  WRAP_CONFIG,
  WRAP_MAX_PORTS,
  WRAP_PORT_TCP,
  WRAP_PORT_UDP,
  WRAP_STAT_NAMES,
} from '../../wire/layouts.js';
import { REFUSAL_MEMO, WRAP_DOWN_DIRECT, WRAP_DOWN_REFUSE } from '../../wire/layouts.js';
import { join } from 'node:path';
import koffi from 'koffi';
import { BpfError, bpfObjectPath, check, lastErrno, libbpf } from './libbpf.js';

const PROGRAMS = [
  'spook_connect4',
  'spook_connect6',
  'spook_sockops',
  'spook_sendmsg4',
  'spook_recvmsg4',
  'spook_sendmsg6',
  'spook_recvmsg6',
] as const;
const SOL_SOCKET = 1;
const SO_NETNS_COOKIE = 71;

export interface OriginalDst {
  family: 4 | 6;
  address: string;
  port: number;
  /**
   * The uid of the task that connected or sent (bpf_get_current_uid_gid), for the per-user share
   * of a peer's slots (PROTOCOL.md §16.5.1); absent when the record has none (an object built
   * before the field: its flags are 0).
   */
  uid?: number;
}
/** A client as the proxy sees it (the accepted socket's remote end, or a datagram's source). */
export interface ClientAddr {
  address: string;
  port: number;
}

/** The compiled object (built by `make` into bpf/spook_wrap.o). */
export function defaultWrapObjectPath(): string {
  return bpfObjectPath('spook_wrap.o');
}

interface Libc {
  socket: (domain: number, type: number, protocol: number) => number;
  getsockopt: (fd: number, level: number, name: number, val: Buffer, len: Buffer) => number;
  close: (fd: number) => number;
  mount: (src: string, target: string, fstype: string, flags: number, data: null) => number;
  umount2: (target: string, flags: number) => number;
}
let libc: Libc | undefined;

function libcCalls(): Libc {
  if (libc) return libc;
  const l = koffi.load('libc.so.6');
  libc = {
    socket: l.func('int socket(int domain, int type, int protocol)'),
    getsockopt: l.func('int getsockopt(int fd, int level, int optname, void *optval, void *optlen)'),
    close: l.func('int close(int fd)'),
    mount: l.func('int mount(const char *source, const char *target, const char *fstype, unsigned long flags, const void *data)'),
    umount2: l.func('int umount2(const char *target, int flags)'),
  } as Libc;
  return libc;
}

/** This process's network namespace cookie, the value bpf_get_netns_cookie() returns for its sockets. */
export function currentNetnsCookie(): bigint {
  const libc = libcCalls();
  const fd = libc.socket(1 /* AF_UNIX: needs no network at all */, 2 /* SOCK_DGRAM */, 0);
  if (fd < 0) throw new Error(`socket() for the netns cookie failed: errno ${lastErrno()}`);
  try {
    const val = Buffer.alloc(8);
    const len = Buffer.alloc(4);
    len.writeUInt32LE(8);
    if (libc.getsockopt(fd, SOL_SOCKET, SO_NETNS_COOKIE, val, len) < 0)
      throw new Error(`getsockopt(SO_NETNS_COOKIE) failed: errno ${lastErrno()} (needs Linux >= 5.14)`);
    return val.readBigUInt64LE(0);
  } finally {
    libc.close(fd);
  }
}

/** The mount point of the cgroup-v2 hierarchy's root in this mount namespace, if any. */
export function cgroup2Root(): string | undefined {
  for (const line of readFileSync('/proc/self/mountinfo', 'utf8').split('\n')) {
    const [pre, post] = line.split(' - ');
    const f = pre?.split(' ');
    // Only a mount of the hierarchy's root ("/"), not of a sub-cgroup.
    if (post?.startsWith('cgroup2 ') && f?.[3] === '/')
      return f[4].replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  }
  return undefined;
}

/**
 * An fd on the cgroup-v2 root. `ip netns exec` (how the lab starts spookd) remounts /sys
 * in a private mount namespace, which hides the cgroup2 mount: then mount a fresh
 * cgroup2 instance (the same hierarchy), open it and detach the mount at once; the fd
 * alone keeps it reachable until the links are made.
 */
function openCgroupRoot(path: string | undefined): { fd: number; where: string } {
  path ??= cgroup2Root();
  if (path) return { fd: openSync(path, constants.O_RDONLY | constants.O_DIRECTORY), where: path };
  const c = libcCalls();
  const dir = mkdtempSync(join(tmpdir(), 'spook-cgroup2-'));
  try {
    if (c.mount('cgroup2', dir, 'cgroup2', 0, null) < 0)
      throw new Error(`no cgroup2 mount in /proc/self/mountinfo, and mounting one failed (errno ${lastErrno()}); pass cgroupPath`);
    try {
      return { fd: openSync(dir, constants.O_RDONLY | constants.O_DIRECTORY), where: 'cgroup2 (private mount)' };
    } finally {
      c.umount2(dir, 2 /* MNT_DETACH */);
    }
  } finally {
    rmdirSync(dir);
  }
}

export class WrapHooks {
  private links: unknown[] = [];
  private closed = false;

  private constructor(private readonly obj: unknown) {}

  /**
   * Load the object, configure it for this process (its netns cookie, pid namespace and
   * pid) and attach the programs to the cgroup-v2 root. Without udpProxyPort the UDP
   * programs are attached too but do nothing. Throws BpfError if the kernel refuses
   * (verifier, missing CAP_BPF/CAP_NET_ADMIN).
   */
  static open(opts: { objPath?: string; proxyPort: number; udpProxyPort?: number; cgroupPath?: string }): WrapHooks {
    const path = opts.objPath ?? defaultWrapObjectPath();
    for (const p of [opts.proxyPort, opts.udpProxyPort ?? 1])
      if (!Number.isInteger(p) || p < 1 || p > 65535) throw new Error(`bad proxy port ${p}`);
    if (!existsSync(path)) throw new Error(`${path}: wrap hooks object not built (run make)`);
    const l = libbpf();
    const obj = l.open(path, null);
    if (!obj) throw new BpfError(`bpf_object__open_file(${path})`, lastErrno());
    const hooks = new WrapHooks(obj);
    try {
      const rc = l.load(obj);
      if (rc < 0) throw new BpfError('bpf_object__load(spook_wrap)', -rc);
      // Configure before attaching, so the programs never run half-configured.
      const pidns = statSync('/proc/self/ns/pid', { bigint: true });
      const cfg = Buffer.from(
        WRAP_CONFIG.encode({
          netns_cookie: currentNetnsCookie(),
          pidns_dev: pidns.dev,
          pidns_ino: pidns.ino,
          self_tgid: process.pid,
          proxy_port: opts.proxyPort,
          udp_proxy_port: opts.udpProxyPort ?? 0, // 0: UDP interception off
        }),
      );
      check('bpf_map_update_elem(wrap_cfg)', l.update(hooks.mapFd('wrap_cfg'), Buffer.alloc(4), cfg, 0));
      const { fd, where } = openCgroupRoot(opts.cgroupPath);
      try {
        for (const name of PROGRAMS) {
          const prog = l.findProg(obj, name);
          if (!prog) throw new Error(`program ${name} not in ${path}`);
          const link = l.attachCgroup(prog, fd);
          if (!link) throw new BpfError(`bpf_program__attach_cgroup(${name}, ${where})`, lastErrno());
          hooks.links.push(link);
        }
      } finally {
        closeSync(fd); // the links hold the cgroup
      }
      return hooks;
    } catch (e) {
      hooks.close();
      throw e;
    }
  }

  /** Map fds by name: each lives as long as the object, and looking one up costs two libbpf calls (per connection, in originalDst). */
  private readonly fds = new Map<string, number>();

  private mapFd(name: string): number {
    if (this.closed) throw new Error('WrapHooks is closed'); // the object is freed
    const known = this.fds.get(name);
    if (known !== undefined) return known;
    const map = libbpf().findMap(this.obj, name);
    if (!map) throw new Error(`map ${name} not in the object`);
    const fd = check('bpf_map__fd', libbpf().mapFd(map));
    this.fds.set(name, fd);
    return fd;
  }

  /** Replace the sets of wrapped destination ports, for TCP and for UDP. */
  setPorts(tcp: number[], udp: number[] = []): void {
    const want = new Map<number, number>(); // port -> WRAP_PORT_TCP | WRAP_PORT_UDP
    for (const [ports, bit] of [
      [tcp, WRAP_PORT_TCP],
      [udp, WRAP_PORT_UDP],
    ] as const) {
      for (const p of ports) {
        if (!Number.isInteger(p) || p < 1 || p > 65535) throw new Error(`bad port ${p}`);
        want.set(p, (want.get(p) ?? 0) | bit);
      }
    }
    if (want.size > WRAP_MAX_PORTS) throw new Error(`at most ${WRAP_MAX_PORTS} wrapped ports (got ${want.size})`);
    const fd = this.mapFd('wrap_ports');
    // Add (or change) first, then remove: a port in both sets is never briefly unwrapped.
    for (const [p, bits] of want) check('bpf_map_update_elem(wrap_ports)', libbpf().update(fd, u16(p), u32(bits), 0));
    const stale: Buffer[] = [];
    for (
      let prev: Buffer | null = null, next = Buffer.alloc(2);
      libbpf().nextKey(fd, prev, next) === 0;
      prev = next, next = Buffer.alloc(2)
    ) {
      if (!want.has(next.readUInt16LE(0))) stale.push(next);
    }
    for (const k of stale) libbpf().del(fd, k);
  }

  /**
   * Replace the TCP-wrapped ports whose peer has no carrier, with what their connects do:
   * `direct` (no rewrite) or `refuse` (EHOSTUNREACH). A port not given is redirected (hold).
   */
  setDown(down: ReadonlyMap<number, 'direct' | 'refuse'>): void {
    const fd = this.mapFd('wrap_down');
    for (const [p, mode] of down) {
      if (!Number.isInteger(p) || p < 1 || p > 65535) throw new Error(`bad port ${p}`);
      check('bpf_map_update_elem(wrap_down)', libbpf().update(fd, u16(p), u32(mode === 'direct' ? WRAP_DOWN_DIRECT : WRAP_DOWN_REFUSE), 0));
    }
    const stale: Buffer[] = [];
    for (
      let prev: Buffer | null = null, next = Buffer.alloc(2);
      libbpf().nextKey(fd, prev, next) === 0;
      prev = next, next = Buffer.alloc(2)
    )
      if (!down.has(next.readUInt16LE(0))) stale.push(next);
    for (const k of stale) libbpf().del(fd, k);
  }

  /**
   * The far side's dial to `dst` failed with `errno`: connects to it fail with that errno in
   * the hook for `ttlMs` (the hook compares with bpf_ktime_get_ns, CLOCK_MONOTONIC, as hrtime is).
   */
  rememberRefusal(dst: OriginalDst, errno: number, ttlMs: number): void {
    const key = origKey(dst);
    if (!key) return;
    const expires = process.hrtime.bigint() + BigInt(Math.max(0, Math.round(ttlMs))) * 1_000_000n;
    const v = Buffer.from(REFUSAL_MEMO.encode({ expires_ns: expires, errno }));
    check('bpf_map_update_elem(wrap_refusals)', libbpf().update(this.mapFd('wrap_refusals'), key, v, 0));
  }

  /** A dial to `dst` succeeded: its refusal, if any, is forgotten at once. */
  forgetRefusal(dst: OriginalDst): void {
    const key = origKey(dst);
    if (key) libbpf().del(this.mapFd('wrap_refusals'), key);
  }

  /**
   * Where the client behind an accepted proxy connection meant to go, by the client's
   * address and port (the accepted socket's remoteAddress and remotePort). Each entry is
   * read once: it is deleted here.
   */
  originalDst(client: ClientAddr): OriginalDst | undefined {
    const key = clientKey(client);
    if (!key) return undefined;
    const fd = this.mapFd('orig_by_client');
    const v = Buffer.alloc(ORIG_DST.size);
    if (libbpf().lookup(fd, key, v) < 0) return undefined;
    libbpf().del(fd, key);
    return decodeOrig(v);
  }

  /**
   * Where the client behind a datagram on the UDP proxy meant to go, by its source (rinfo).
   * Not deleted: a flow sends many datagrams; forgetUdp() ends it.
   */
  originalUdpDst(client: ClientAddr): OriginalDst | undefined {
    const key = clientKey(client);
    const v = Buffer.alloc(ORIG_DST.size);
    if (!key || libbpf().lookup(this.mapFd('udp_orig_by_client'), key, v) < 0) return undefined;
    return decodeOrig(v);
  }

  /** Drop a UDP flow's record: the client's replies keep the proxy as their source after this. */
  forgetUdp(client: ClientAddr): void {
    const key = clientKey(client);
    if (key) libbpf().del(this.mapFd('udp_orig_by_client'), key);
  }

  /** wrap_stats by name, summed over CPUs. */
  stats(): Record<string, number> {
    const fd = this.mapFd('wrap_stats');
    const cpus = libbpf().cpus();
    const out: Record<string, number> = {};
    WRAP_STAT_NAMES.forEach((name, slot) => {
      const k = Buffer.alloc(4);
      k.writeUInt32LE(slot);
      const v = Buffer.alloc(8 * cpus); // one u64 per possible CPU
      out[name] =
        libbpf().lookup(fd, k, v) < 0
          ? 0
          : Array.from({ length: cpus }, (_, c) => Number(v.readBigUInt64LE(8 * c))).reduce((a, b) => a + b, 0);
    });
    return out;
  }

  /** Detach (destroying the links restores the direct path) and free the object. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const link of this.links) libbpf().linkDestroy(link);
    this.links = [];
    libbpf().close(this.obj);
  }
}

const u16 = (v: number): Buffer => {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(v);
  return b;
};
const u32 = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return b;
};

/**
 * struct spook_client (CLIENT_KEY) for a client address (IPv4, IPv6, or IPv4-mapped IPv6, which
 * the hooks record as IPv4): the address in network order, IPv4 in its first four bytes.
 */
export function clientKey(c: ClientAddr): Buffer | undefined {
  if (!Number.isInteger(c.port) || c.port < 1 || c.port > 65535) return undefined;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(c.address);
  const v4 = mapped ? mapped[1] : isIPv4(c.address) ? c.address : undefined;
  if (v4 !== undefined) return Buffer.from(CLIENT_KEY.encode({ family: 4, port: c.port, addr: new Uint8Array(v4.split('.').map(Number)) }));
  if (!isIPv6(c.address)) return undefined;
  return Buffer.from(CLIENT_KEY.encode({ family: 6, port: c.port, addr: ipv6Bytes(c.address) }));
}

/**
 * struct spook_orig (ORIG_DST) for a destination, as the connect hooks build it before they record
 * the uid (the key of wrap_refusals: flags, uid and the unused address zero).
 */
export function origKey(d: OriginalDst): Buffer | undefined {
  if (!Number.isInteger(d.port) || d.port < 1 || d.port > 65535) return undefined;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(d.address);
  const v4 = mapped ? mapped[1] : isIPv4(d.address) ? d.address : undefined;
  if (v4 !== undefined) {
    const ip4 = v4.split('.').reduce((a, o) => a * 256 + Number(o), 0);
    return Buffer.from(ORIG_DST.encode({ family: 4, port: d.port, ip4, ip6: new Uint8Array(16) }));
  }
  if (!isIPv6(d.address)) return undefined;
  return Buffer.from(ORIG_DST.encode({ family: 6, port: d.port, ip4: 0, ip6: ipv6Bytes(d.address) }));
}

/** struct spook_orig (ORIG_DST): IPv4 in ip4, IPv6 in ip6, both in network order; the uid if the hook recorded one. */
export function decodeOrig(v: Uint8Array): OriginalDst {
  const o = ORIG_DST.decode(v);
  const ip4 = o.ip4; // network order: a.b.c.d from the high byte down
  const uid = o.flags & ORIG_FLAG_UID ? { uid: o.uid } : {};
  if (o.family === 4)
    return { family: 4, address: [ip4 >>> 24, (ip4 >>> 16) & 0xff, (ip4 >>> 8) & 0xff, ip4 & 0xff].join('.'), port: o.port, ...uid };
  const groups = Array.from({ length: 8 }, (_, i) => ((o.ip6[2 * i] << 8) | o.ip6[2 * i + 1]).toString(16)).join(':');
  return { family: 6, address: new SocketAddress({ address: groups, family: 'ipv6' }).address, port: o.port, ...uid };
}
