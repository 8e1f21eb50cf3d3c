/**
 * The etcd baseline of the benches (`bench library`, `bench domain`: three members; `bench
 * link`: one replica, no quorum): Debian's etcd-server as foreground processes on loopback ports
 * with a temporary data dir (etcd always fsyncs its WAL before it acknowledges a put), driven
 * through the npm `etcd3` client. Everything started here is torn down on every path (and on
 * SIGINT/SIGTERM); every wait is bounded.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Etcd3, type IOptions } from 'etcd3';
import { until } from '../testing/lab/netns.js';
import { drive, onSignal, type Load } from './load.js';

/** `etcd --version`'s first line; refuses plainly when Debian's etcd-server is missing. */
export function etcdVersion(): string {
  try {
    return execFileSync('etcd', ['--version'], { encoding: 'utf8', timeout: 10_000 }).split('\n')[0].replace('etcd Version: ', '');
  } catch (e) {
    throw new Error(`bench: cannot run etcd (${(e as Error).message}); install it with \`make etcd-deps\` (Debian's etcd-server)`);
  }
}

interface EtcdCluster {
  procs: ChildProcess[];
  urls: string[];
  dir: string;
}

/** `n` members: client URLs on basePort+10.., peer URLs on basePort+10+n... */
function startEtcd(basePort: number, n: number): EtcdCluster {
  const dir = mkdtempSync(join(tmpdir(), 'spook-bench-etcd-'));
  const names = Array.from({ length: n }, (_, i) => `m${i}`);
  const peer = (i: number): string => `http://127.0.0.1:${basePort + 10 + n + i}`;
  const urls = names.map((_, i) => `http://127.0.0.1:${basePort + 10 + i}`);
  const cluster = names.map((n, i) => `${n}=${peer(i)}`).join(',');
  const procs = names.map((n, i) => {
    mkdirSync(join(dir, n));
    const p = spawn(
      'etcd',
      [
        `--name=${n}`,
        `--data-dir=${join(dir, n, 'data')}`,
        `--listen-client-urls=${urls[i]}`,
        `--advertise-client-urls=${urls[i]}`,
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
    const out = createWriteStream(join(dir, n, 'etcd.log'));
    p.stdout!.pipe(out);
    p.stderr!.pipe(out);
    return p;
  });
  return { procs, urls, dir };
}

async function stopEtcd(c: EtcdCluster): Promise<void> {
  await Promise.all(
    c.procs.map(
      (p) =>
        new Promise<void>((resolve) => {
          if (p.exitCode !== null || p.signalCode !== null) return resolve();
          p.once('exit', () => resolve());
          p.kill('SIGKILL');
        }),
    ),
  );
  rmSync(c.dir, { recursive: true, force: true });
}

/** A running etcd: its leader's and a follower's client URL (the leader's with one member), and clients closed at teardown. */
export interface Etcd {
  leaderUrl: string;
  followerUrl: string;
  client(url: string): Etcd3;
}

/**
 * Starts an etcd of `members` (3 by default), waits (bounded) until every member agrees on a
 * leader, runs `body`, and tears everything down whatever happens.
 */
export async function withEtcd<T>(basePort: number, body: (etcd: Etcd) => Promise<T>, members = 3): Promise<T> {
  const cluster = startEtcd(basePort, members);
  const forget = onSignal(() => {
    for (const p of cluster.procs) p.kill('SIGKILL');
    rmSync(cluster.dir, { recursive: true, force: true });
  });
  const clients: Etcd3[] = [];
  const client = (url: string): Etcd3 => {
    const opts: IOptions = { hosts: url, dialTimeout: 5_000, defaultCallOptions: () => ({ deadline: Date.now() + 30_000 }) };
    const c = new Etcd3(opts);
    clients.push(c);
    return c;
  };
  try {
    const clients0 = cluster.urls.map(client);
    const leaderUrl = await until(
      `etcd: ${members} member(s) agreeing on a leader`,
      async () => {
        for (const p of cluster.procs) if (p.exitCode !== null) throw new Error(`etcd exited with ${p.exitCode} (logs in ${cluster.dir})`);
        // Each try bounded: a member not up yet must not hold the loop for the client's 30 s deadline.
        const st = await Promise.all(clients0.map((m) => m.maintenance.status({ deadline: Date.now() + 10_000 })));
        const leader = st[0].leader;
        if (leader === '0' || st.some((s) => s.leader !== leader)) return undefined;
        return cluster.urls[st.findIndex((s) => s.header.member_id === leader)];
      },
      30_000,
      100,
    );
    return await body({ leaderUrl, followerUrl: cluster.urls.find((u) => u !== leaderUrl) ?? leaderUrl, client });
  } finally {
    forget();
    for (const c of clients) c.close();
    await stopEtcd(cluster);
  }
}

/** `sets` puts of `value(i)` on `key(i)` (default `key-i`), `inflight` awaiting at once, each timed; a put resolves only once committed. */
export function etcdPuts(
  w: Etcd3,
  o: { sets: number; inflight: number; limitMs: number; key?: (i: number) => string },
  value: (i: number) => string,
): Promise<Load> {
  const key = o.key ?? ((i: number): string => `key-${i}`);
  return drive('etcd puts', o.sets, o.inflight, o.limitMs, async (i) => {
    await w.put(key(i)).value(value(i));
    return true;
  });
}
