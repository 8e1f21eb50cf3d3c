/**
 * The XDP program from the control plane: load, configure, attach (native, generic as
 * fallback), pin maps under /sys/fs/bpf/spook, keep the pair table in step with ETCP
 * sessions, read counters, and run BPF_PROG_TEST_RUN for tests and benchmarks.
 */
import { existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { DROP_REASON_NAMES, type DropReason } from '../../wire/constants.js';
import {
  PAIR_SLOT,
  XDP_CONFIG,
  XDP_COUNTER_PASS_ESTP,
  XDP_COUNTER_PASS_OTHER,
  XDP_COUNTER_PASS_FRAGMENT,
  XDP_COUNTER_SLOTS,
  XDP_HANDSHAKE_MAX,
  XDP_PAIR_SLOTS,
  viewOf,
} from '../../wire/layouts.js';
import {
  BpfError,
  XDP_FLAGS_DRV_MODE,
  XDP_FLAGS_SKB_MODE,
  XDP_FLAGS_UPDATE_IF_NOEXIST,
  bpfObjectPath,
  check,
  closeFd,
  lastErrno,
  libbpf,
} from './libbpf.js';

export const PIN_DIR = '/sys/fs/bpf/spook';
export const MAP_NAMES = ['config', 'pairs', 'counters', 'hs_buckets', 'frag_ids'] as const;
const COUNTER_SIZE = 8; // each slot of `counters` is a per-CPU __u64

/** The compiled object (built by `make` into bpf/spook_xdp.o). */
export function defaultObjectPath(): string {
  return bpfObjectPath('spook_xdp.o');
}

export interface XdpConfig {
  port: number;
  enforcePairs: boolean;
  /** Handshake frames per second per source address, and the bucket depth. */
  handshakeRate: number;
  handshakeBurst: number;
}

export type XdpMode = 'native' | 'generic';

const MODE_FLAGS: [XdpMode, number][] = [
  ['native', XDP_FLAGS_DRV_MODE],
  ['generic', XDP_FLAGS_SKB_MODE],
];
const EEXIST = 17;
const ENODEV = 19;
const EINVAL = 22;
const flagsOf = (mode: XdpMode): number => MODE_FLAGS.find(([m]) => m === mode)![1];

/** The interface already runs an XDP program that is not this one: spookd never replaces it. */
export class XdpOccupiedError extends Error {
  constructor(
    readonly ifname: string,
    readonly programId: number,
    readonly mode: XdpMode,
  ) {
    super(
      `${ifname} already has an XDP program attached (id ${programId}, ${mode} mode), which spookd does not replace; ` +
        `detach it (ip link set dev ${ifname} xdp off) or remove the \`xdp:\` section`,
    );
    this.name = 'XdpOccupiedError';
  }
}

/** Whatever XDP program is attached to the interface in native or generic mode, if any. */
function occupant(ifindex: number): { id: number; mode: XdpMode } | undefined {
  for (const [mode, flags] of MODE_FLAGS) {
    const id = [0];
    if (libbpf().xdpQueryId(ifindex, flags, id) >= 0 && id[0] !== 0) return { id: id[0], mode };
  }
  return undefined;
}

/** What `detach` did: `replaced`: ours was no longer attached (another program, or none, is left alone). */
export type DetachResult = 'detached' | 'replaced' | 'interface-gone' | 'failed';

/** What identifies a loaded program (struct bpf_prog_info): its id (offset 4), tag (8, a hash of its instructions) and name (64). */
function progInfo(fd: number): { id: number; tag: string; name: string } {
  const info = Buffer.alloc(80);
  check('bpf_obj_get_info_by_fd', libbpf().objInfo(fd, info, [info.length]));
  const name = info.subarray(64, 80);
  const end = name.indexOf(0);
  return { id: info.readUInt32LE(4), tag: info.subarray(8, 16).toString('hex'), name: name.subarray(0, end < 0 ? 16 : end).toString() };
}

/**
 * Detach program `id` (open as `fd`) from the interface in the mode of `flags`, only if it is still
 * the one attached: XDP_FLAGS_REPLACE with its fd, the kernel compares. Kernels before 5.7 refuse
 * that flag (EINVAL, outside their XDP_FLAGS_MASK): there the attached id is checked, then the
 * mode detached (the only way those kernels offer; a program attached between the two is removed).
 */
function detachIf(ifindex: number, flags: number, fd: number, id: number): DetachResult {
  const l = libbpf();
  let rc = l.xdpDetach(ifindex, flags, { sz: l.xdpAttachOptsSize, old_prog_fd: fd });
  if (rc === -EINVAL) {
    const cur = [0];
    rc = l.xdpQueryId(ifindex, flags, cur);
    if (rc >= 0 && cur[0] !== id) return 'replaced';
    if (rc >= 0) rc = l.xdpDetach(ifindex, flags, null);
  }
  return rc >= 0 ? 'detached' : rc === -EEXIST ? 'replaced' : rc === -ENODEV ? 'interface-gone' : 'failed';
}

const u32 = (v: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(v >>> 0);
  return b;
};

function ifindexOf(ifname: string): number {
  try {
    return Number(readFileSync(`/sys/class/net/${ifname}/ifindex`, 'utf8').trim());
  } catch {
    throw new Error(`no network interface named ${ifname}`);
  }
}

/** A per-CPU map value's room in a lookup or update buffer: each CPU's copy is 8-byte aligned. */
const perCpuStride = (size: number): number => Math.ceil(size / 8) * 8;

/** Reads a map by fd: per-CPU values are summed (each CPU's slot is 8-byte aligned). */
export class MapReader {
  constructor(
    readonly fd: number,
    readonly keySize: number,
    readonly valueSize: number,
    readonly perCpu: boolean,
  ) {}

  private get cpus(): number {
    return this.perCpu ? libbpf().cpus() : 1;
  }

  /** The value(s) for a key: one Buffer per CPU for per-CPU maps. */
  lookup(key: Buffer): Buffer[] | undefined {
    const stride = this.perCpu ? perCpuStride(this.valueSize) : this.valueSize;
    const out = Buffer.alloc(stride * this.cpus);
    if (libbpf().lookup(this.fd, key, out) < 0) return undefined;
    return Array.from({ length: this.cpus }, (_, i) => out.subarray(i * stride, i * stride + this.valueSize));
  }

  keys(): Buffer[] {
    const keys: Buffer[] = [];
    let prev: Buffer | null = null;
    for (let i = 0; i < 1_000_000; i++) {
      const next = Buffer.alloc(this.keySize);
      if (libbpf().nextKey(this.fd, prev, next) < 0) break;
      keys.push(next);
      prev = next;
    }
    return keys;
  }
}

export function counterReader(fd: number): MapReader {
  return new MapReader(fd, 4, COUNTER_SIZE, true);
}
/** The pair table: slot (low 16 bits of the pair id) → per-CPU struct spook_pair_slot (PAIR_SLOT). */
export const PAIR_SLOTS = XDP_PAIR_SLOTS;
export function pairsReader(fd: number): MapReader {
  return new MapReader(fd, 4, PAIR_SLOT.size, true);
}

/** Drop and pass counters by name, summed over CPUs. */
export function readCounters(r: MapReader): Record<string, number> {
  const out: Record<string, number> = {};
  for (let slot = 0; slot < XDP_COUNTER_SLOTS; slot++) {
    const vals = r.lookup(u32(slot)) ?? [];
    const n = vals.reduce((a, v) => a + Number(v.readBigUInt64LE(0)), 0);
    const name =
      slot === XDP_COUNTER_PASS_ESTP
        ? 'pass-estp'
        : slot === XDP_COUNTER_PASS_OTHER
          ? 'pass-other'
          : slot === XDP_COUNTER_PASS_FRAGMENT
            ? 'pass-fragment'
            : DROP_REASON_NAMES[slot as DropReason];
    out[name] = n;
  }
  return out;
}

/** Occupied slots of the pair table, with packets and bytes summed over CPUs. */
export function readPairStats(r: MapReader, slots?: number[]): { pairId: number; packets: number; bytes: number }[] {
  const out: { pairId: number; packets: number; bytes: number }[] = [];
  for (const slot of slots ?? Array.from({ length: PAIR_SLOTS }, (_, i) => i)) {
    const vals = r.lookup(u32(slot))?.map(viewOf);
    const id = vals ? PAIR_SLOT.fields.id.get(vals[0]) : 0;
    if (!vals || id === 0) continue;
    out.push({
      pairId: id,
      packets: vals.reduce((a, v) => a + PAIR_SLOT.fields.packets.getNumber(v), 0),
      bytes: vals.reduce((a, v) => a + PAIR_SLOT.fields.bytes.getNumber(v), 0),
    });
  }
  return out;
}

/** Open pinned maps of a running spookd (for `spook maps dump`). */
export function openPinned(name: (typeof MAP_NAMES)[number], dir = PIN_DIR): number {
  const fd = libbpf().objGet(join(dir, name));
  if (fd < 0)
    throw new Error(
      `${join(dir, name)}: cannot open (${fd === -1 ? `errno ${lastErrno()}` : `errno ${-fd}`}); is spookd running with XDP?`,
    );
  return fd;
}

export class XdpProgram {
  private attached: { ifindex: number; ifname: string; mode: XdpMode; at: number; flags: number; programId: number } | undefined;
  private pinnedDir: string | undefined;
  private replaced: number | undefined;
  private readonly live = new Set<number>();

  private constructor(private readonly obj: unknown) {}

  /** Open and load the object (the verifier runs here). Throws BpfError if the kernel refuses. */
  static load(path = defaultObjectPath()): XdpProgram {
    if (!existsSync(path)) throw new Error(`${path}: XDP object not built (run make)`);
    const l = libbpf();
    const obj = l.open(path, null);
    if (!obj) throw new BpfError(`bpf_object__open_file(${path})`, lastErrno());
    const rc = l.load(obj);
    if (rc < 0) {
      l.close(obj);
      throw new BpfError('bpf_object__load', -rc);
    }
    return new XdpProgram(obj);
  }

  progFd(name = 'spook_xdp'): number {
    const prog = libbpf().findProg(this.obj, name);
    if (!prog) throw new Error(`program ${name} not in the object`);
    return check('bpf_program__fd', libbpf().progFd(prog));
  }

  mapFd(name: (typeof MAP_NAMES)[number]): number {
    const map = libbpf().findMap(this.obj, name);
    if (!map) throw new Error(`map ${name} not in the object`);
    return check('bpf_map__fd', libbpf().mapFd(map));
  }

  configure(c: XdpConfig): void {
    // The u32 fields would silently wrap (2^32 to 0: every handshake dropped).
    for (const [name, v] of [
      ['handshakeRate', c.handshakeRate],
      ['handshakeBurst', c.handshakeBurst],
    ] as const)
      if (!Number.isInteger(v) || v < 0 || v > XDP_HANDSHAKE_MAX)
        throw new RangeError(`${name}: ${v} is not an integer in 0..${XDP_HANDSHAKE_MAX}`);
    const v = Buffer.from(
      XDP_CONFIG.encode({ port: c.port, enforce_pairs: c.enforcePairs ? 1 : 0, hs_rate: c.handshakeRate, hs_burst: c.handshakeBurst }),
    );
    check('bpf_map_update_elem(config)', libbpf().update(this.mapFd('config'), u32(0), v, 0));
  }

  /** Admit a pair id (its low 16 bits must not be in use by another live pair). */
  addPair(pairId: number): void {
    const cpus = libbpf().cpus();
    const slot = PAIR_SLOT.encode({ id: pairId }); // per-CPU slots: the id in each, counters zero
    const stride = perCpuStride(PAIR_SLOT.size);
    const v = Buffer.alloc(stride * cpus);
    for (let c = 0; c < cpus; c++) v.set(slot, c * stride);
    check('bpf_map_update_elem(pairs)', libbpf().update(this.mapFd('pairs'), u32(pairId & (PAIR_SLOTS - 1)), v, 0));
    this.live.add(pairId >>> 0);
  }

  removePair(pairId: number): void {
    if (!this.live.delete(pairId >>> 0)) return;
    const v = Buffer.alloc(perCpuStride(PAIR_SLOT.size) * libbpf().cpus());
    libbpf().update(this.mapFd('pairs'), u32(pairId & (PAIR_SLOTS - 1)), v, 0);
  }

  pairIds(): number[] {
    return [...this.live];
  }

  counters(): Record<string, number> {
    return readCounters(counterReader(this.mapFd('counters')));
  }

  pairStats(): { pairId: number; packets: number; bytes: number }[] {
    return readPairStats(
      pairsReader(this.mapFd('pairs')),
      [...this.live].map((id) => id & (PAIR_SLOTS - 1)),
    );
  }

  /**
   * Attach to an interface: native (driver) mode first, generic (skb) as the fallback
   * unless a mode is forced. Returns the mode that worked. A program already attached there
   * (an operator's filter, a libxdp dispatcher) is never replaced: XdpOccupiedError, checked
   * first and enforced by the kernel (XDP_FLAGS_UPDATE_IF_NOEXIST) against a race. The one
   * exception is spookd's own leftover (a run killed before recording it, or whose detach
   * failed): program `spook_xdp` with the same tag (the same instructions) as this one. It is
   * replaced atomically where the kernel can (XDP_FLAGS_REPLACE with its fd, 5.7 and later),
   * else detached first; `replacedLeftover` then names it.
   */
  attach(ifname: string, mode: XdpMode | 'auto' = 'auto'): XdpMode {
    const ifindex = ifindexOf(ifname);
    const fd = this.progFd();
    const tries = mode === 'auto' ? MODE_FLAGS : MODE_FLAGS.filter(([m]) => m === mode);
    this.replaced = undefined;
    const first = occupant(ifindex);
    if (first) {
      const old = this.ownLeftover(first.id, fd);
      if (old === undefined) throw new XdpOccupiedError(ifname, first.id, first.mode);
      try {
        const flags = flagsOf(first.mode);
        if (tries.some(([m]) => m === first.mode)) {
          const rc = libbpf().xdpAttach(ifindex, fd, flags, { sz: libbpf().xdpAttachOptsSize, old_prog_fd: old });
          if (rc >= 0) {
            this.attached = { ifindex, ifname, mode: first.mode, at: Date.now(), flags, programId: this.programId(fd) };
            this.replaced = first.id;
            return first.mode;
          }
        }
        // No atomic replace (a kernel before 5.7, or another mode configured): detach it, then attach as below.
        const r = detachIf(ifindex, flags, old, first.id);
        if (r === 'detached') this.replaced = first.id;
        else if (r === 'failed')
          throw new Error(`${ifname}: cannot detach spookd's own XDP program left by a previous run (id ${first.id})`);
      } finally {
        closeFd(old);
      }
    }
    let last: Error | undefined;
    for (const [m, flags] of tries) {
      const other = occupant(ifindex);
      if (other) throw new XdpOccupiedError(ifname, other.id, other.mode);
      const rc = libbpf().xdpAttach(ifindex, fd, flags | XDP_FLAGS_UPDATE_IF_NOEXIST, null);
      if (rc >= 0) {
        this.attached = { ifindex, ifname, mode: m, at: Date.now(), flags, programId: this.programId(fd) };
        return m;
      }
      last = new BpfError(`bpf_xdp_attach(${ifname}, ${m})`, -rc);
    }
    const other = occupant(ifindex); // attached by someone else while we tried
    throw other ? new XdpOccupiedError(ifname, other.id, other.mode) : last!;
  }

  /** The id of spookd's own leftover program replaced (or removed) by the last `attach`, if any. */
  get replacedLeftover(): number | undefined {
    return this.replaced;
  }

  /**
   * An fd of program `id` (the caller closes it) if it is spookd's own: named `spook_xdp` with
   * the tag of ours (`fd`), i.e. loaded from the same object by a previous run; else undefined.
   */
  private ownLeftover(id: number, fd: number): number | undefined {
    const other = libbpf().progFdById(id);
    if (other < 0) return undefined; // gone meanwhile: the attach below sees the interface as it is
    try {
      const mine = progInfo(fd);
      const theirs = progInfo(other);
      if (theirs.id === id && theirs.name === mine.name && theirs.tag === mine.tag && theirs.id !== mine.id) return other;
    } catch {
      /* not identified: treated as another program */
    }
    closeFd(other);
    return undefined;
  }

  /** The kernel's id of this program. */
  get id(): number {
    return this.programId(this.progFd());
  }

  /** The kernel's id of a loaded program (the `id` of struct bpf_prog_info, at offset 4). */
  private programId(fd: number): number {
    return progInfo(fd).id;
  }

  /** How the program is attached (to record for `detachStale` after a crash), if it is. */
  get attachRecord(): { ifname: string; flags: number; programId: number } | undefined {
    const a = this.attachment;
    return a && this.attached ? { ifname: a.ifname, flags: this.attached.flags, programId: a.programId } : undefined;
  }

  /**
   * Detach the XDP program a previous run left on `ifname` (killed before its shutdown path,
   * or whose detach failed), only if the program attached there is still the recorded one: a
   * program attached since by someone else is left alone. A record without `flags` (written
   * before the attach, as an intent) is looked for in either mode. Returns what was done.
   */
  static detachStale(rec: { ifname: string; flags?: number; programId: number }): 'detached' | 'gone' | 'replaced-by-another' {
    let ifindex: number;
    try {
      ifindex = ifindexOf(rec.ifname);
    } catch {
      return 'gone';
    }
    let another = false;
    for (const flags of rec.flags === undefined ? MODE_FLAGS.map(([, f]) => f) : [rec.flags]) {
      const id = [0];
      if (libbpf().xdpQueryId(ifindex, flags, id) < 0 || id[0] === 0) continue;
      if (id[0] !== rec.programId) {
        another = true;
        continue;
      }
      const fd = libbpf().progFdById(rec.programId);
      if (fd < 0) return 'gone';
      let r: DetachResult;
      try {
        r = detachIf(ifindex, flags, fd, rec.programId);
      } finally {
        closeFd(fd);
      }
      if (r === 'failed') throw new Error(`bpf_xdp_detach(${rec.ifname}) failed`);
      return r === 'detached' ? 'detached' : r === 'replaced' ? 'replaced-by-another' : 'gone';
    }
    return another ? 'replaced-by-another' : 'gone';
  }

  get attachment(): { ifname: string; mode: XdpMode; at: number; programId: number } | undefined {
    if (!this.attached) return undefined;
    // Our own id, not whatever is attached now: a record of another program's would let detachStale remove it.
    return { ifname: this.attached.ifname, mode: this.attached.mode, at: this.attached.at, programId: this.attached.programId };
  }

  /**
   * Detach this program, only if it is still the one attached (the kernel compares it,
   * XDP_FLAGS_REPLACE with our fd; before 5.7, the attached id is checked first): a program
   * attached since by someone else is left alone.
   */
  detach(): DetachResult | undefined {
    if (!this.attached) return undefined;
    const { ifindex, flags, programId } = this.attached;
    this.attached = undefined;
    return detachIf(ifindex, flags, this.progFd(), programId);
  }

  /** Pin every map under `dir` (replacing stale pins from a previous run). */
  pin(dir = PIN_DIR): void {
    // Not recursive: Node's recursive mkdir can spin forever on sysfs when bpffs is not mounted.
    if (!existsSync(dir)) mkdirSync(dir);
    for (const name of MAP_NAMES) {
      const path = join(dir, name);
      if (existsSync(path)) rmSync(path);
      const map = libbpf().findMap(this.obj, name);
      check(`bpf_map__pin(${path})`, libbpf().mapPin(map, path));
    }
    this.pinnedDir = dir;
  }

  unpin(): void {
    if (!this.pinnedDir) return;
    for (const name of MAP_NAMES) rmSync(join(this.pinnedDir, name), { force: true });
    this.pinnedDir = undefined;
  }

  /** BPF_PROG_TEST_RUN: the verdict for one packet, and the mean ns per run over `repeat`. */
  testRun(packet: Uint8Array, repeat = 1, prog = 'spook_xdp'): { retval: number; durationNs: number } {
    const l = libbpf();
    const data = Buffer.from(packet);
    const opts = {
      sz: l.testRunOptsSize,
      data_in: data,
      data_out: null,
      data_size_in: data.length,
      data_size_out: 0,
      ctx_in: null,
      ctx_out: null,
      ctx_size_in: 0,
      ctx_size_out: 0,
      retval: 0,
      repeat,
      duration: 0,
      flags: 0,
      cpu: 0,
      batch_size: 0,
    };
    check('bpf_prog_test_run_opts', l.testRun(this.progFd(prog), opts));
    return { retval: opts.retval, durationNs: opts.duration };
  }

  close(): void {
    this.detach();
    this.unpin();
    libbpf().close(this.obj);
  }
}

export const XDP_ABORTED = 0;
export const XDP_DROP = 1;
export const XDP_PASS = 2;
