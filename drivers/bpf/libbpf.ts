/**
 * libbpf (libbpf.so.1) through koffi: just the calls the control plane needs to load,
 * attach, pin, test-run and read the XDP program's maps. Every failure becomes a BpfError
 * naming the call and the errno, so "the kernel refused BPF" is a clear message.
 */
import koffi from 'koffi';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** A compiled BPF object of this checkout or installed tree (`make` builds them into bpf/). */
export function bpfObjectPath(file: string): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) dir = dirname(dir);
  return join(dir, 'bpf', file);
}

export class BpfError extends Error {
  constructor(
    readonly call: string,
    readonly errno: number,
  ) {
    super(`${call} failed: ${errnoName(errno)} (${errno})`);
    this.name = 'BpfError';
  }
}

const ERRNO: Record<number, string> = {
  1: 'EPERM',
  2: 'ENOENT',
  7: 'E2BIG',
  9: 'EBADF',
  13: 'EACCES',
  16: 'EBUSY',
  17: 'EEXIST',
  19: 'ENODEV',
  22: 'EINVAL',
  28: 'ENOSPC',
  95: 'EOPNOTSUPP',
  524: 'ENOTSUPP',
};
const errnoName = (e: number): string => ERRNO[e] ?? `errno ${e}`;

export const XDP_FLAGS_UPDATE_IF_NOEXIST = 1 << 0;
export const XDP_FLAGS_SKB_MODE = 1 << 1;
export const XDP_FLAGS_DRV_MODE = 1 << 2;

/** libbpf's struct bpf_xdp_attach_opts: with old_prog_fd set, the kernel acts only if that program is the one attached (XDP_FLAGS_REPLACE). */
export interface XdpAttachOpts {
  sz: number;
  old_prog_fd: number;
}

interface Lib {
  open: (path: string, opts: null) => unknown;
  load: (obj: unknown) => number;
  close: (obj: unknown) => void;
  findProg: (obj: unknown, name: string) => unknown;
  progFd: (prog: unknown) => number;
  findMap: (obj: unknown, name: string) => unknown;
  mapFd: (map: unknown) => number;
  mapPin: (map: unknown, path: string) => number;
  mapUnpin: (map: unknown, path: string | null) => number;
  xdpAttach: (ifindex: number, fd: number, flags: number, opts: XdpAttachOpts | null) => number;
  xdpDetach: (ifindex: number, flags: number, opts: XdpAttachOpts | null) => number;
  xdpQueryId: (ifindex: number, flags: number, id: number[]) => number;
  xdpAttachOptsSize: number;
  /** bpf_obj_get_info_by_fd: the kernel copies at most `len[0]` octets of struct bpf_prog_info (its id at offset 4). */
  objInfo: (fd: number, info: Buffer, len: number[]) => number;
  /** bpf_prog_get_fd_by_id: a new fd of a loaded program (close it), or a negative errno. */
  progFdById: (id: number) => number;
  update: (fd: number, key: Buffer, value: Buffer, flags: number) => number;
  lookup: (fd: number, key: Buffer, value: Buffer) => number;
  del: (fd: number, key: Buffer) => number;
  nextKey: (fd: number, key: Buffer | null, next: Buffer) => number;
  objGet: (path: string) => number;
  testRun: (fd: number, opts: Record<string, unknown>) => number;
  cpus: () => number;
  testRunOptsSize: number;
  /** cgroup hooks through a bpf_link (NULL + errno on failure): the link dies with its fd. */
  attachCgroup: (prog: unknown, cgroupFd: number) => unknown;
  linkDestroy: (link: unknown) => number;
}

let lib: Lib | undefined;
let loadError: Error | undefined;

/** The bound library, or a clear error if libbpf.so.1 is not installed. */
export function libbpf(): Lib {
  if (lib) return lib;
  if (loadError) throw loadError;
  try {
    const l = koffi.load('libbpf.so.1');
    const TestRunOpts = koffi.struct('bpf_test_run_opts', {
      sz: 'size_t',
      data_in: 'void *',
      data_out: 'void *',
      data_size_in: 'uint32_t',
      data_size_out: 'uint32_t',
      ctx_in: 'void *',
      ctx_out: 'void *',
      ctx_size_in: 'uint32_t',
      ctx_size_out: 'uint32_t',
      retval: 'uint32_t',
      repeat: 'int',
      duration: 'uint32_t',
      flags: 'uint32_t',
      cpu: 'uint32_t',
      batch_size: 'uint32_t',
    });
    const AttachOpts = koffi.struct('bpf_xdp_attach_opts', { sz: 'size_t', old_prog_fd: 'int' });
    lib = {
      open: l.func('void *bpf_object__open_file(const char *path, void *opts)'),
      load: l.func('int bpf_object__load(void *obj)'),
      close: l.func('void bpf_object__close(void *obj)'),
      findProg: l.func('void *bpf_object__find_program_by_name(void *obj, const char *name)'),
      progFd: l.func('int bpf_program__fd(void *prog)'),
      findMap: l.func('void *bpf_object__find_map_by_name(void *obj, const char *name)'),
      mapFd: l.func('int bpf_map__fd(void *map)'),
      mapPin: l.func('int bpf_map__pin(void *map, const char *path)'),
      mapUnpin: l.func('int bpf_map__unpin(void *map, const char *path)'),
      xdpAttach: l.func('bpf_xdp_attach', 'int', ['int', 'int', 'uint32_t', koffi.pointer(AttachOpts)]),
      xdpDetach: l.func('bpf_xdp_detach', 'int', ['int', 'uint32_t', koffi.pointer(AttachOpts)]),
      xdpQueryId: l.func('int bpf_xdp_query_id(int ifindex, int flags, _Out_ uint32_t *prog_id)'),
      xdpAttachOptsSize: koffi.sizeof(AttachOpts),
      objInfo: l.func('int bpf_obj_get_info_by_fd(int bpf_fd, _Out_ void *info, _Inout_ uint32_t *info_len)'),
      progFdById: l.func('int bpf_prog_get_fd_by_id(uint32_t id)'),
      update: l.func('int bpf_map_update_elem(int fd, const void *key, const void *value, uint64_t flags)'),
      lookup: l.func('int bpf_map_lookup_elem(int fd, const void *key, _Out_ void *value)'),
      del: l.func('int bpf_map_delete_elem(int fd, const void *key)'),
      nextKey: l.func('int bpf_map_get_next_key(int fd, const void *key, _Out_ void *next_key)'),
      objGet: l.func('int bpf_obj_get(const char *pathname)'),
      testRun: l.func('bpf_prog_test_run_opts', 'int', ['int', koffi.inout(koffi.pointer(TestRunOpts))]),
      cpus: l.func('int libbpf_num_possible_cpus(void)'),
      testRunOptsSize: koffi.sizeof(TestRunOpts),
      attachCgroup: l.func('void *bpf_program__attach_cgroup(void *prog, int cgroup_fd)'),
      linkDestroy: l.func('int bpf_link__destroy(void *link)'),
    } as unknown as Lib;
    return lib;
  } catch (e) {
    loadError = new Error(`libbpf.so.1 cannot be loaded (${(e as Error).message}); install libbpf1 (apt-get install libbpf1)`);
    throw loadError;
  }
}

let closeFn: ((fd: number) => number) | undefined;

/** Close an fd libbpf returned (Node's closeSync warns about fds it did not open). */
export function closeFd(fd: number): void {
  if (fd < 0) return;
  closeFn ??= koffi.load('libc.so.6').func('int close(int fd)') as (fd: number) => number;
  closeFn(fd);
}

/** libbpf returns -errno; some calls leave it in errno. */
export function check(call: string, rc: number): number {
  if (rc < 0) throw new BpfError(call, -rc);
  return rc;
}

export function lastErrno(): number {
  return koffi.errno();
}
