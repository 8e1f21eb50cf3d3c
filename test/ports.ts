/**
 * Fixed listening ports of the tests that bind them in the host's own network namespace (UDP
 * and TCP on loopback): each such test file has a block of its own here, and takes its ports
 * from `portBase(<its file>)`. Why a table rather than a formula on the pid:
 *
 * - vitest runs test files in worker threads of one process (vitest.config.ts, pool 'threads'),
 *   several at once, so `process.pid` is the same for every file of a run: two files computing
 *   their ports from it the same way got the same ports and could fail with EADDRINUSE.
 * - Linux gives every outgoing socket a port of its ephemeral range (32768-60999 by default,
 *   net.ipv4.ip_local_port_range), so a fixed port in there may already be held by any other
 *   test's client socket. Every block is below 32768 (and above the privileged ports).
 *
 * A block is `ports` consecutive ports (what the file binds or points its peers at, from its
 * base) times LANES: a run uses lane `pid % LANES` of every block, so the files of one run never
 * meet, and two runs on one machine at once (a developer's `make test` and a CI clone's, with
 * other pids) meet only when their pids are equal modulo LANES. Tests that run inside network
 * namespaces they create (testing/lab: Lab without `loopback`, BridgedPair, RoamLab, ConnectLab)
 * need no block: a fresh namespace's ports are its own. A file that binds more ports needs a
 * larger `ports` (and its block, and every later one, moved); test/ports.test.ts checks the table.
 * 32100-32767 is free for new files.
 */

/** Lanes per block: runs on one machine whose pids differ modulo this use disjoint ports. */
export const LANES = 170;

export interface PortBlock {
  /** First and last port of the block (inclusive). */
  readonly first: number;
  readonly last: number;
  /** Consecutive ports the file uses from its base in one run. */
  readonly ports: number;
}

/** One block per file (named from test/), each `ports` × LANES long; what the file uses, from its base. */
export const BLOCKS = {
  /** a, b; base+3: the listen of a start refused for adminGroup */
  'admin-access.test.ts': { first: 10_000, last: 10_679, ports: 4 },
  /** a, b */
  'admin-protocol.test.ts': { first: 10_680, last: 11_019, ports: 2 },
  /** Lab on loopback: a, b (+2: c when domain); etcd: clients +10..+12, peers +13..+15 */
  'bench-library.test.ts': { first: 11_020, last: 13_739, ports: 16 },
  /** hub; +1: the peers (on 127.1.x.y); +2: redis-server */
  'bench-scale.test.ts': { first: 13_740, last: 14_249, ports: 3 },
  /** listen (UDP held by the test); +1, +2: peer endpoints; +3: metrics (TCP held by the test) */
  'check-config.test.ts': { first: 14_250, last: 14_929, ports: 4 },
  /** a, b */
  'cli-exit.test.ts': { first: 14_930, last: 15_269, ports: 2 },
  /** a, b */
  'client-package.test.ts': { first: 15_270, last: 15_609, ports: 2 },
  /** a; +1: b (an endpoint only) */
  'client-resilience.test.ts': { first: 15_610, last: 15_949, ports: 2 },
  /** a, b, c (resolve); +3: a, b (moved); +5: a, b, c (reload) */
  'dns-endpoints.test.ts': { first: 15_950, last: 17_309, ports: 8 },
  /** a, b, c */
  'domain-large.test.ts': { first: 17_310, last: 17_819, ports: 3 },
  /** a, b */
  'feed.test.ts': { first: 17_820, last: 18_159, ports: 2 },
  /** a, b */
  'large-values-spookd.test.ts': { first: 18_160, last: 18_499, ports: 2 },
  /** three pairs a, b */
  'logging.test.ts': { first: 18_500, last: 19_519, ports: 6 },
  /** a, b; +2: metrics (TCP) */
  'metrics.test.ts': { first: 19_520, last: 20_029, ports: 3 },
  /** a, b, x, y, z */
  'reload-live.test.ts': { first: 20_030, last: 20_879, ports: 5 },
  /** a, b, c */
  'reload-partial.test.ts': { first: 20_880, last: 21_389, ports: 3 },
  /** a, b, c */
  'reload-stop.test.ts': { first: 21_390, last: 21_899, ports: 3 },
  /** f, x, y */
  'reload-streams.test.ts': { first: 21_900, last: 22_409, ports: 3 },
  /** x, y */
  'reload-unknown.test.ts': { first: 22_410, last: 22_749, ports: 2 },
  /** a, b */
  'reload-wrap.test.ts': { first: 22_750, last: 23_089, ports: 2 },
  /** h, a */
  'spookd-local-write-deadlines.test.ts': { first: 23_090, last: 23_429, ports: 2 },
  /** spookd; +1, +2: peer endpoints (b, c; nothing listens) */
  'sighup.test.ts': { first: 23_430, last: 23_939, ports: 3 },
  /** a, b, c, h, g, x, l, m (l on 127.0.0.3 at base+0) */
  'spookd-contain.test.ts': { first: 23_940, last: 25_299, ports: 8 },
  /** p, q (on 127.0.0.4) */
  'spookd-fastpath-order.test.ts': { first: 25_300, last: 25_639, ports: 2 },
  /** x (on 127.0.0.7); +1: a, c */
  'spookd-group-commit.test.ts': { first: 25_640, last: 26_149, ports: 3 },
  /** a, b */
  'spookd-mismatch.test.ts': { first: 26_150, last: 26_489, ports: 2 },
  /** a, b, c */
  'spookd-peers-live.test.ts': { first: 26_490, last: 26_999, ports: 3 },
  /** a, c; +2: a, c */
  'spookd-secure-own.test.ts': { first: 27_000, last: 27_679, ports: 4 },
  /** a, b, c (and e, x on 127.0.0.5 and .6 at base+0) */
  'spookd-store-fail.test.ts': { first: 27_680, last: 28_189, ports: 3 },
  /** h, a, b, c */
  'spookd-timers.test.ts': { first: 28_190, last: 28_869, ports: 4 },
  /** a, b, c */
  'txn.test.ts': { first: 28_870, last: 29_379, ports: 3 },
  /** the two example mirror apps (HTTP; the spookd run in namespaces) */
  'e2e/library.test.ts': { first: 29_380, last: 29_719, ports: 2 },
  /** z, x, b, v, u, c, other, y, w */
  'reload-revoke.test.ts': { first: 29_720, last: 31_249, ports: 9 },
  /** a, b */
  'client-truth.test.ts': { first: 31_250, last: 31_589, ports: 2 },
  /** a, b */
  'store-corrupt-mid.test.ts': { first: 31_590, last: 31_929, ports: 2 },
  /** metrics */
  'metrics-contain.test.ts': { first: 31_930, last: 32_099, ports: 1 },
  /** a (its peer has no endpoint) */
  'spookd-log-limits.test.ts': { first: 32_100, last: 32_269, ports: 1 },
  /** a, b */
  'library-outcome.test.ts': { first: 32_428, last: 32_767, ports: 2 },
} as const satisfies Record<string, PortBlock>;

export type PortFile = keyof typeof BLOCKS;

/** The first port `file` uses in the run of process `pid`: its block's first port plus the run's lane. */
export function portBaseFor(file: PortFile, pid: number): number {
  const b: PortBlock = BLOCKS[file];
  return b.first + (pid % LANES) * b.ports;
}

/** The first port `file` uses in this run (the `ports` from there on are its own). */
export const portBase = (file: PortFile): number => portBaseFor(file, process.pid);
