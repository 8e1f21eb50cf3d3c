/**
 * etcd as a same-run baseline (issue 16): Debian's etcd-server (`make etcd-deps`) started as
 * foreground processes on loopback ports with a data dir of ours (the package's own service is
 * never used), and the load an application would put on it through the npm `etcd3` client.
 *
 *  startEtcd(n, basePort, dataDir)  n members (1 for `bench link`: one replica, no quorum);
 *                                   client URLs basePort.., peer URLs basePort+n..; resolves
 *                                   once every member answers and they agree on a leader;
 *  putLoad(endpoint, o)             `puts` puts, `inflight` awaiting at once, each timed.
 *
 * etcd always fsyncs its WAL before it acknowledges a put. Every wait is bounded; `stop` kills
 * the members and removes their data on every path.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { Etcd3 } from 'etcd3';

export interface EtcdMembers {
  /** Client URLs, one per member. */
  endpoints: string[];
  /** The leader's client URL. */
  leader: string;
  version: string;
  stop(): Promise<void>;
}

/** `etcd --version`'s first line; refuses plainly when Debian's etcd-server is missing. */
export function etcdVersion(): string {
  try {
    return execFileSync('etcd', ['--version'], { encoding: 'utf8', timeout: 10_000 }).split('\n')[0].replace('etcd Version: ', '');
  } catch (e) {
    throw new Error(`cannot run etcd (${(e as Error).message}); install it with \`make etcd-deps\` (Debian's etcd-server)`);
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

export async function startEtcd(n: number, basePort: number, dataDir: string, readyMs = 30_000): Promise<EtcdMembers> {
  const version = etcdVersion();
  const names = Array.from({ length: n }, (_, i) => `m${i}`);
  const endpoints = names.map((_, i) => `http://127.0.0.1:${basePort + i}`);
  const peer = (i: number): string => `http://127.0.0.1:${basePort + n + i}`;
  const cluster = names.map((m, i) => `${m}=${peer(i)}`).join(',');
  const procs: ChildProcess[] = [];
  const clients: Etcd3[] = [];
  const stop = async (): Promise<void> => {
    for (const c of clients) c.close();
    await Promise.all(
      procs.map(
        (p) =>
          new Promise<void>((resolve) => {
            if (p.exitCode !== null || p.signalCode !== null) return resolve();
            p.once('exit', () => resolve());
            p.kill('SIGKILL');
          }),
      ),
    );
    rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    for (const [i, m] of names.entries()) {
      mkdirSync(join(dataDir, m), { recursive: true });
      const p = spawn(
        'etcd',
        [
          `--name=${m}`,
          `--data-dir=${join(dataDir, m, 'data')}`,
          `--listen-client-urls=${endpoints[i]}`,
          `--advertise-client-urls=${endpoints[i]}`,
          `--listen-peer-urls=${peer(i)}`,
          `--initial-advertise-peer-urls=${peer(i)}`,
          `--initial-cluster=${cluster}`,
          '--initial-cluster-token=spook-bench',
          '--initial-cluster-state=new',
          '--logger=zap',
          '--log-level=warn',
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      procs.push(p);
      const out = createWriteStream(join(dataDir, m, 'etcd.log'));
      p.stdout!.pipe(out);
      p.stderr!.pipe(out);
    }
    for (const url of endpoints) clients.push(new Etcd3({ hosts: url, dialTimeout: 2_000 }));
    const end = Date.now() + readyMs;
    for (;;) {
      for (const p of procs) if (p.exitCode !== null) throw new Error(`etcd exited with ${p.exitCode} (log in ${dataDir})`);
      try {
        const st = await Promise.all(clients.map((c) => c.maintenance.status()));
        const leader = st[0].leader;
        if (leader !== '0' && st.every((s) => s.leader === leader)) {
          const leaderUrl = endpoints[st.findIndex((s) => s.header.member_id === leader)];
          if (leaderUrl) return { endpoints, leader: leaderUrl, version, stop };
        }
      } catch {
        /* not up yet */
      }
      if (Date.now() > end) throw new Error(`etcd: ${n} member(s) did not agree on a leader within ${readyMs} ms`);
      await sleep(100);
    }
  } catch (e) {
    await stop();
    throw e;
  }
}

export interface PutLoad {
  puts: number;
  acked: number;
  putsPerSec: number;
  p50Ms: number;
  p99Ms: number;
}

/** `puts` puts of `valueBytes` on `key(i)` through the etcd3 client, `inflight` at once; fails past `limitMs`. */
export async function putLoad(
  endpoint: string,
  o: { puts: number; inflight: number; valueBytes: number; limitMs: number; key?: (i: number) => string },
): Promise<PutLoad> {
  const key = o.key ?? ((i: number) => `k${i}`);
  const value = 'v'.repeat(o.valueBytes);
  const client = new Etcd3({ hosts: endpoint, dialTimeout: 5_000, defaultCallOptions: () => ({ deadline: Date.now() + 30_000 }) });
  try {
    const lat = new Float64Array(o.puts);
    let next = 0;
    let acked = 0;
    const t0 = performance.now();
    const end = t0 + o.limitMs;
    await Promise.all(
      Array.from({ length: Math.min(o.inflight, o.puts) }, async () => {
        while (next < o.puts) {
          if (performance.now() > end) throw new Error(`etcd load: ${next} of ${o.puts} puts issued after ${o.limitMs} ms`);
          const i = next++;
          const s = performance.now();
          await client.put(key(i)).value(value); // resolves once committed (WAL fsynced)
          lat[i] = performance.now() - s;
          acked++;
        }
      }),
    );
    const dt = performance.now() - t0;
    lat.sort();
    const pct = (p: number): number => Number(lat[Math.min(lat.length - 1, Math.floor(p * lat.length))].toFixed(2));
    return { puts: o.puts, acked, putsPerSec: Math.round(acked / (dt / 1000)), p50Ms: pct(0.5), p99Ms: pct(0.99) };
  } finally {
    client.close();
  }
}
