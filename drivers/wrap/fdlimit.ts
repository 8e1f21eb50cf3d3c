/**
 * The process's descriptor limit, for the cap on wrapped connections (WrapManager): each costs a
 * descriptor (a local TCP socket, or a UDP socket to the real server), and a peer's limit
 * (maxConnections) bounds no sum across peers. Past RLIMIT_NOFILE every open fails with EMFILE,
 * the stores' too (a snapshot, a new log: the pair is fenced, store-failed), and the carriers' and
 * the admin socket's accepts. getrlimit(2) through libc with koffi (Node has no binding for it).
 */
import { readdirSync } from 'node:fs';
import koffi from 'koffi';

const RLIMIT_NOFILE = 7; // Linux, every architecture spookd runs on

type GetRlimit = (resource: number, out: { cur: number | bigint; max: number | bigint }) => number;
let getrlimit: GetRlimit | undefined;

/** The soft RLIMIT_NOFILE (what an open meets), or undefined where it cannot be read (no libc, unlimited). */
export function descriptorLimit(): number | undefined {
  try {
    if (!getrlimit) {
      koffi.struct('spook_rlimit', { cur: 'uint64_t', max: 'uint64_t' });
      getrlimit = koffi.load('libc.so.6').func('int getrlimit(int, _Out_ spook_rlimit *)') as unknown as GetRlimit;
    }
    const out = { cur: 0, max: 0 } as { cur: number | bigint; max: number | bigint };
    if (getrlimit(RLIMIT_NOFILE, out) !== 0) return undefined;
    const cur = BigInt(out.cur);
    return cur >= BigInt(Number.MAX_SAFE_INTEGER) ? undefined : Number(cur);
  } catch {
    return undefined;
  }
}

/** Descriptors open now (/proc/self/fd, less the one reading it); undefined where it cannot be read. */
export function descriptorsOpen(): number | undefined {
  try {
    return readdirSync('/proc/self/fd').length - 1;
  } catch {
    return undefined;
  }
}
