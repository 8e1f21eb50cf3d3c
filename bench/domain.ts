/**
 * `spook-lab bench domain`: three spookd on loopback forming a QN domain (real UDP, ETCP,
 * fsync as configured).
 *
 *  committedPerSec       candidates (one set of 100 B each) proposed on the leader through
 *  p50Ms / p99Ms         the admin API, 256 in flight, until each is reported committed;
 *                        the latency of each call;
 *  etcdCommittedPerSec   the baseline, same run and same machine: a 3-member etcd (Debian's
 *  etcdP50Ms / P99Ms     etcd-server, foreground processes on loopback, fsync always) and the
 *                        same puts through the etcd3 client on its leader (bench/etcd.ts);
 *  vsEtcd                committedPerSec / etcdCommittedPerSec (the goal of issue 16: ≥ 1);
 *  pairCommittedPerSec   the same daemons committing sets on a pair register (leader-follower);
 *  catchUpMs / Bytes     a follower stopped (SIGSTOP) while the other two commit `missed`
 *                        updates that rewrite `gapKeys` keys (each `missed / gapKeys` times),
 *                        then resumed: time until it has applied everything, and the QN bytes
 *                        it received and sent meanwhile (payload of the sealed frames, ETCP's
 *                        36 bytes per frame not included);
 *  fullStateBytes        what a full copy of the domain's registers would cost.
 *
 * Everything it starts is torn down on every path; every load is bounded in time (limitMs).
 */
import { AdminClient } from '../client/admin-client.js';
import type { DomainSummary } from '../client/protocol.js';
import { Lab, sleep, until } from '../testing/lab/netns.js';
import { etcdPuts, etcdVersion, withEtcd } from './etcd.js';
import { drive, loadFigures, onSignal } from './load.js';

export interface DomainBenchResult {
  date: string;
  deltas: number;
  inflight: number;
  valueBytes: number;
  fsync: string;
  etcdVersion: string;
  committedPerSec: number;
  p50Ms: number;
  p99Ms: number;
  etcdCommittedPerSec: number;
  etcdP50Ms: number;
  etcdP99Ms: number;
  /** committedPerSec / etcdCommittedPerSec (above 1: Spook ahead). */
  vsEtcd: number;
  pairCommittedPerSec: number;
  missedUpdates: number;
  gapKeys: number;
  catchUpMs: number;
  catchUpBytes: number;
  fullStateBytes: number;
  catchUpVsFull: number;
  leaderChanges: number;
}

const HOSTS = ['a', 'b', 'c'];

/** The fields the run fills in around the Spook figures. */
type DomainBenchHead = Pick<
  DomainBenchResult,
  | 'date'
  | 'deltas'
  | 'inflight'
  | 'valueBytes'
  | 'fsync'
  | 'etcdVersion'
  | 'committedPerSec'
  | 'p50Ms'
  | 'p99Ms'
  | 'etcdCommittedPerSec'
  | 'etcdP50Ms'
  | 'etcdP99Ms'
  | 'vsEtcd'
>;

const INFLIGHT = 256;
const VALUE_BYTES = 100;

export interface DomainBenchOptions {
  deltas: number;
  missed: number;
  /** Distinct keys the missed updates rewrite (each rewritten missed / gapKeys times). */
  gapKeys: number;
  fsync: string;
  basePort: number;
  /** The most one load phase may last (ms); past it the bench fails. */
  limitMs: number;
}

export async function runDomainBench(o: DomainBenchOptions): Promise<DomainBenchResult> {
  const version = etcdVersion(); // before anything starts: no etcd, no run
  const date = new Date().toISOString();
  // etcd first, then the domain, back to back (the machine's load drifts).
  const value = (i: number): string => `${i}:`.padEnd(VALUE_BYTES, 'v');
  const etcd = await withEtcd(o.basePort, async (e) =>
    loadFigures(await etcdPuts(e.client(e.leaderUrl), { sets: o.deltas, inflight: INFLIGHT, limitMs: o.limitMs }, value)),
  );
  const spook = await runSpook(o, value);
  return {
    date,
    deltas: o.deltas,
    inflight: INFLIGHT,
    valueBytes: VALUE_BYTES,
    fsync: o.fsync,
    etcdVersion: version,
    committedPerSec: spook.committedPerSec,
    p50Ms: spook.p50Ms,
    p99Ms: spook.p99Ms,
    etcdCommittedPerSec: etcd.perSec,
    etcdP50Ms: etcd.p50Ms,
    etcdP99Ms: etcd.p99Ms,
    vsEtcd: etcd.perSec > 0 ? Number((spook.committedPerSec / etcd.perSec).toFixed(2)) : 0,
    ...spook.rest,
  };
}

async function runSpook(
  o: DomainBenchOptions,
  value: (i: number) => string,
): Promise<{ committedPerSec: number; p50Ms: number; p99Ms: number; rest: Omit<DomainBenchResult, keyof DomainBenchHead> }> {
  const lab = new Lab(
    HOSTS,
    [
      { a: 'a', b: 'b', subnet: 1 },
      { a: 'a', b: 'c', subnet: 2 },
      { a: 'b', b: 'c', subnet: 3 },
    ],
    o.basePort,
    true,
  );
  const clients = new Map<string, AdminClient>();
  const forget = onSignal(() => {
    for (const h of lab.hosts.values()) h.proc?.kill('SIGKILL');
  });
  try {
    for (const h of HOSTS)
      lab.configure(h, [{ name: 'p', kind: 'map', maxPending: 65536 }], {
        fsync: o.fsync,
        logLevel: 'warn',
        domains: [
          {
            name: 'bench',
            members: HOSTS.filter((x) => x !== h),
            registers: [{ name: 'kv', kind: 'map' }],
            maxPending: 4096,
            electionMs: 1000,
            heartbeatMs: 100,
          },
        ],
      });
    await Promise.all(HOSTS.map((h) => lab.start(h)));
    for (const h of HOSTS) clients.set(h, await AdminClient.connect(lab.host(h).socket));
    const info = (h: string): Promise<DomainSummary> => clients.get(h)!.request('domain', { domain: 'bench' });
    const leader = await until(
      'a leader',
      async () => {
        for (const h of HOSTS) if ((await info(h)).role === 'leader') return h;
        return undefined;
      },
      30_000,
    );
    const follower = HOSTS.find((h) => h !== leader)!;
    const lc = clients.get(leader)!;
    const load = await drive('bench domain', o.deltas, INFLIGHT, o.limitMs, async (i) => {
      const r = await lc.request('dpropose', {
        domain: 'bench',
        ops: [{ register: 'kv', op: 'set', key: `key-${i}`, value: value(i) }],
        timeoutMs: 60_000,
      });
      if (r.verdict !== 'committed') throw new Error(`candidate ${i}: ${r.verdict}`);
      return true;
    });
    const spook = loadFigures(load);
    // The same daemons committing sets on a pair register.
    await until('pair entangled', async () => (await lc.request('pair', { peer: follower })).state === 'ENTANGLED', 20_000);
    const pair = await drive('bench domain (pair)', o.deltas, INFLIGHT, o.limitMs, async (i) => {
      const r = await lc.request('set', { peer: follower, register: 'p', key: `key-${i}`, value: value(i), timeoutMs: 60_000 });
      return r.verdict === 'committed';
    });

    // Catch-up: stop a follower, commit `missed` updates on the other two, resume it.
    await until('follower caught up', async () => (await info(follower)).appliedIndex === (await info(leader)).commitIndex, 30_000);
    const before = await info(follower);
    lab.host(follower).proc!.kill('SIGSTOP');
    await drive('bench domain (missed updates)', o.missed, INFLIGHT, o.limitMs, async (i) => {
      const r = await lc.request('dpropose', {
        domain: 'bench',
        ops: [{ register: 'kv', op: 'set', key: `key-${i % Math.min(o.gapKeys, o.deltas)}`, value: `${i}`.padEnd(VALUE_BYTES, '.') }],
        timeoutMs: 60_000,
      });
      return r.verdict === 'committed';
    });
    const target = (await info(leader)).commitIndex;
    await sleep(200);
    const t0 = performance.now();
    lab.host(follower).proc!.kill('SIGCONT');
    const after = await until(
      'follower caught up after the stop',
      async () => {
        const x = await info(follower);
        return x.appliedIndex >= target ? x : undefined;
      },
      120_000,
      20,
    );
    const catchUpMs = Math.round(performance.now() - t0);
    const catchUpBytes = after.stats.bytesIn - before.stats.bytesIn + (after.stats.bytesOut - before.stats.bytesOut);
    return {
      committedPerSec: spook.perSec,
      p50Ms: spook.p50Ms,
      p99Ms: spook.p99Ms,
      rest: {
        pairCommittedPerSec: loadFigures(pair).perSec,
        missedUpdates: o.missed,
        gapKeys: Math.min(o.gapKeys, o.deltas),
        catchUpMs,
        catchUpBytes,
        fullStateBytes: after.fullStateBytes,
        catchUpVsFull: Number((catchUpBytes / after.fullStateBytes).toFixed(3)),
        leaderChanges: (await info(leader)).stats.leaderChanges,
      },
    };
  } finally {
    forget();
    for (const c of clients.values()) c.close();
    // A clean stop first (bounded), so daemons run under --cpu-prof (SPOOK_LAB_NODE_ARGS) write their profiles.
    await Promise.race([Promise.all(HOSTS.map((h) => lab.stop(h))), sleep(10_000)]);
    await lab.destroy();
  }
}
