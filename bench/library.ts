/**
 * `spook-lab bench library`: what an application sees through the library, against the etcd3
 * client on a 3-member etcd, in the same run on the same machine (issue 15, "Figures").
 *
 *  Spook pair     two spookd on loopback (real UDP, ETCP, fsync as configured); the writer uses
 *                 only the public library (`openRegister` from client/index.ts) on the
 *                 sequencer's host: `sets` sets of `valueBytes`, `inflight` awaiting at once,
 *                 each call timed (p50/p99); a second library consumer on the follower's host
 *                 counts the committed writes delivered to it (events, and entries in them);
 *  Spook domain   (optional) three spookd in a QN domain, the like of etcd's three members: the
 *                 same sets through the library (`openDomain().register('kv').set`) on the
 *                 leader, a library consumer (`watch`) on a follower member;
 *  etcd           Debian's etcd-server, three members as foreground processes on loopback
 *                 ports with a temporary data dir (etcd always fsyncs its WAL), the same puts
 *                 through the npm `etcd3` client on the leader, a watcher on a follower.
 *
 * Everything it measures it starts, and tears down on every path; every loop is bounded in
 * count and time.
 */
import { rmSync } from 'node:fs';
import { loadavg } from 'node:os';
import { openDomain, openRegister, type RegisterHandle } from '../client/index.js';
import { Lab, sleep, until } from '../testing/lab/netns.js';
import { etcdPuts, etcdVersion, withEtcd } from './etcd.js';
import { drive as driveLoad, loadFigures, onSignal, perSec, type Load } from './load.js';

export { etcdVersion };

export interface LibraryBenchOptions {
  sets: number;
  inflight: number;
  valueBytes: number;
  fsync: string;
  basePort: number;
  domain: boolean;
  /** The most the load phase of one system may last (ms); past it the bench fails. */
  limitMs: number;
  log?: (line: string) => void;
}

/** What the far end's consumer received: `events` deliveries carrying `entries` committed writes. */
export interface WatchFigures {
  events: number;
  entries: number;
  eventsPerSec: number;
  entriesPerSec: number;
  /** From the first set sent to the last write seen by the consumer. */
  lastSeenMs: number;
  /** From the writer's last acknowledgement to the last write seen (negative: seen before acknowledged). */
  afterLastAckMs: number;
}

export interface LibraryRow {
  system: 'spook-pair' | 'spook-domain' | 'etcd';
  /** How the writes were made. */
  via: string;
  sets: number;
  /** Writes acknowledged as committed (anything else is a failure of the row). */
  acked: number;
  setsPerSec: number;
  p50Ms: number;
  p99Ms: number;
  watch: WatchFigures | null;
}

export interface LibraryBenchResult {
  date: string;
  sets: number;
  inflight: number;
  valueBytes: number;
  fsync: string;
  etcdVersion: string;
  /** The machine's 1-minute load average when the run started (it is shared: figures move with it). */
  loadAvg: number;
  rows: LibraryRow[];
  /** Spook pair over etcd (above 1: Spook ahead). */
  ratios: { setsPerSec: number; entriesPerSec: number; domainSetsPerSec: number | null; domainEntriesPerSec: number | null };
}

// ---- the load (bench/load.ts), named for this bench's errors ----

const drive = (total: number, inflight: number, limitMs: number, one: (i: number) => Promise<boolean>): Promise<Load> =>
  driveLoad('bench library', total, inflight, limitMs, one);

function row(system: LibraryRow['system'], via: string, load: Load, watch: WatchFigures | null): LibraryRow {
  const f = loadFigures(load);
  return { system, via, sets: load.latencies.length, acked: load.acked, setsPerSec: f.perSec, p50Ms: f.p50Ms, p99Ms: f.p99Ms, watch };
}

// ---- the far end's consumer: counts deliveries, whatever the watch API ----

/** Counts what a watcher delivers; `seen(n)` is called once per delivery with the committed writes in it. */
class Tally {
  events = 0;
  entries = 0;
  lastAt = 0;
  seen(n: number): void {
    if (n === 0) return;
    this.events++;
    this.entries += n;
    this.lastAt = performance.now();
  }
  /** Waits (bounded) until `total` writes were delivered, then the figures against the load. */
  async figures(total: number, load: Load, limitMs: number): Promise<WatchFigures> {
    const end = performance.now() + limitMs;
    while (this.entries < total && performance.now() < end) await sleep(5);
    const window = this.lastAt - load.t0;
    return {
      events: this.events,
      entries: this.entries,
      eventsPerSec: perSec(this.events, window),
      entriesPerSec: perSec(this.entries, window),
      lastSeenMs: Math.round(window),
      afterLastAckMs: Math.round(this.lastAt - load.lastAck),
    };
  }
}

/** The Spook consumer, the only place that knows the library's watch API: the change feed, one call per committed change. */
async function spookWatch(handle: Pick<RegisterHandle, 'watch'>, tally: Tally): Promise<void> {
  await handle.watch('key-', { onChange: () => tally.seen(1) });
}

// ---- Spook ----

const value = (i: number, bytes: number): string => `${i}:`.padEnd(bytes, 'v');

/** Runs `body` against spookd started on loopback (a full mesh of `hosts`), then tears them down. */
async function withLab<T>(
  o: LibraryBenchOptions,
  hosts: string[],
  extra: (h: string) => Record<string, unknown>,
  body: (lab: Lab) => Promise<T>,
): Promise<T> {
  const links = hosts.flatMap((a, i) => hosts.slice(i + 1).map((b, j) => ({ a, b, subnet: 10 * i + j + 1 })));
  const lab = new Lab(hosts, links, o.basePort, true);
  const forget = onSignal(() => {
    for (const h of lab.hosts.values()) h.proc?.kill('SIGKILL');
    rmSync(lab.dir, { recursive: true, force: true });
  });
  try {
    for (const h of hosts)
      lab.configure(h, [{ name: 'kv', kind: 'map', maxPending: 65536 }], { fsync: o.fsync, logLevel: 'warn', ...extra(h) });
    await Promise.all(hosts.map((h) => lab.start(h)));
    return await body(lab);
  } finally {
    forget();
    await lab.destroy();
  }
}

/** Two spookd: the application's sets through the library on one end, a library consumer on the other. */
function pairRow(o: LibraryBenchOptions, log: (l: string) => void): Promise<LibraryRow> {
  return withLab(
    o,
    ['a', 'b'],
    () => ({}),
    async (lab) => {
      const pair = await until(
        'the pair a-b entangled',
        async () => {
          const p = await lab.admin('a', 'pair', { peer: 'b' });
          return p.state === 'ENTANGLED' ? p : undefined;
        },
        20_000,
        50,
      );
      const [writer, reader] = pair.role === 'sequencer' ? ['a', 'b'] : ['b', 'a'];
      log(`spook pair: writer on the sequencer (${writer}), consumer on the follower (${reader}), fsync ${o.fsync}`);
      // The application: the public library only.
      const w = await openRegister('kv', { peer: reader, socket: lab.host(writer).socket });
      const r = await openRegister('kv', { peer: writer, socket: lab.host(reader).socket }).catch((e: unknown) => {
        w.close();
        throw e;
      });
      try {
        const tally = new Tally();
        await spookWatch(r, tally);
        const load = await drive(o.sets, o.inflight, o.limitMs, async (i) => {
          const out = await w.set(`key-${i}`, value(i, o.valueBytes), { timeoutMs: 30_000 });
          return out.verdict === 'committed';
        });
        const x = row('spook-pair', 'openRegister().set', load, await tally.figures(o.sets, load, 30_000));
        log(`spook pair: ${x.setsPerSec} sets/s, ${x.watch!.entries} of ${o.sets} seen at the far end`);
        return x;
      } finally {
        w.close();
        r.close();
      }
    },
  );
}

/** Three spookd in a QN domain: the same sets through the library on the leader, a library consumer on a follower member. */
function domainRow(o: LibraryBenchOptions, log: (l: string) => void): Promise<LibraryRow> {
  const hosts = ['a', 'b', 'c'];
  const domain = (h: string): Record<string, unknown> => ({
    domains: [
      {
        name: 'bench',
        members: hosts.filter((x) => x !== h),
        registers: [{ name: 'kv', kind: 'map' }],
        maxPending: 4096,
        electionMs: 1000,
        heartbeatMs: 100,
      },
    ],
  });
  return withLab(o, hosts, domain, async (lab) => {
    const leader = await until(
      'a domain leader',
      async () => {
        for (const h of hosts) if ((await lab.admin(h, 'domain', { domain: 'bench' })).role === 'leader') return h;
        return undefined;
      },
      30_000,
    );
    const follower = hosts.find((h) => h !== leader)!;
    log(`spook domain: writer on the leader (${leader}), consumer on a follower member (${follower})`);
    // The application: the public library only, as for the pair.
    const w = await openDomain('bench', { socket: lab.host(leader).socket });
    const r = await openDomain('bench', { socket: lab.host(follower).socket }).catch((e: unknown) => {
      w.close();
      throw e;
    });
    try {
      const tally = new Tally();
      await spookWatch(r.register('kv'), tally);
      const kv = w.register('kv');
      const load = await drive(o.sets, o.inflight, o.limitMs, async (i) => {
        const out = await kv.set(`key-${i}`, value(i, o.valueBytes), { timeoutMs: 30_000 });
        return out.verdict === 'committed';
      });
      const x = row('spook-domain', 'openDomain().set', load, await tally.figures(o.sets, load, 30_000));
      log(`spook domain: ${x.setsPerSec} sets/s, ${x.watch!.entries} of ${o.sets} seen at a follower member`);
      return x;
    } finally {
      w.close();
      r.close();
    }
  });
}

// ---- etcd ----

function etcdRow(o: LibraryBenchOptions, log: (l: string) => void): Promise<LibraryRow> {
  return withEtcd(o.basePort, async (etcd) => {
    log(`etcd: writer on the leader (${etcd.leaderUrl}), watcher on a follower (${etcd.followerUrl})`);
    const w = etcd.client(etcd.leaderUrl);
    const tally = new Tally();
    const watcher = await etcd.client(etcd.followerUrl).watch().prefix('key-').create();
    watcher.on('data', (res) => tally.seen(res.events.filter((e) => e.type === 'Put').length));
    try {
      const load = await etcdPuts(w, o, (i) => value(i, o.valueBytes));
      const r = row('etcd', 'etcd3 put', load, await tally.figures(o.sets, load, 30_000));
      log(`etcd: ${r.setsPerSec} puts/s, ${r.watch!.entries} of ${o.sets} seen by the watcher`);
      return r;
    } finally {
      await watcher.cancel().catch(() => undefined);
    }
  });
}

// ---- the run ----

export async function runLibraryBench(o: LibraryBenchOptions): Promise<LibraryBenchResult> {
  const log = o.log ?? (() => undefined);
  const version = etcdVersion(); // before anything starts: no etcd, no run
  const load1 = Number(loadavg()[0].toFixed(2));
  // The pair and etcd back to back (the machine's load drifts), then the domain.
  const pair = await pairRow(o, log);
  const etcd = await etcdRow(o, log);
  const domain = o.domain ? await domainRow(o, log) : undefined;
  const ratio = (a: number, b: number): number => (b > 0 ? Number((a / b).toFixed(2)) : 0);
  return {
    date: new Date().toISOString(),
    sets: o.sets,
    inflight: o.inflight,
    valueBytes: o.valueBytes,
    fsync: o.fsync,
    etcdVersion: version,
    loadAvg: load1,
    rows: domain ? [pair, etcd, domain] : [pair, etcd],
    ratios: {
      setsPerSec: ratio(pair.setsPerSec, etcd.setsPerSec),
      entriesPerSec: ratio(pair.watch!.entriesPerSec, etcd.watch!.entriesPerSec),
      domainSetsPerSec: domain ? ratio(domain.setsPerSec, etcd.setsPerSec) : null,
      domainEntriesPerSec: domain ? ratio(domain.watch!.entriesPerSec, etcd.watch!.entriesPerSec) : null,
    },
  };
}

/** The human table. */
export function formatLibraryBench(r: LibraryBenchResult): string[] {
  const n = (x: number): string => x.toLocaleString('en-US');
  const lines = [
    `${n(r.sets)} sets of ${r.valueBytes} B, ${r.inflight} in flight; Spook fsync ${r.fsync}, etcd ${r.etcdVersion} (fsyncs its WAL always); load average ${r.loadAvg} at the start`,
    'system        via                    acked    sets/s   p50 ms   p99 ms   watch events/s  entries/s  seen   last seen ms  after last ack ms',
  ];
  for (const x of r.rows) {
    const w = x.watch;
    const cells = [
      x.system.padEnd(13),
      x.via.padEnd(20),
      `${x.acked}/${x.sets}`.padStart(11),
      n(x.setsPerSec).padStart(9),
      x.p50Ms.toFixed(1).padStart(8),
      x.p99Ms.toFixed(1).padStart(8),
      (w ? n(w.eventsPerSec) : '-').padStart(16),
      (w ? n(w.entriesPerSec) : '-').padStart(10),
      (w ? String(w.entries) : '-').padStart(6),
      (w ? n(w.lastSeenMs) : '-').padStart(14),
      (w ? n(w.afterLastAckMs) : '-').padStart(18),
    ];
    lines.push(cells.join(' '));
  }
  const d =
    r.ratios.domainSetsPerSec === null
      ? ''
      : `; Spook domain / etcd: sets/s ${r.ratios.domainSetsPerSec}x, watch entries/s ${r.ratios.domainEntriesPerSec}x`;
  lines.push(`Spook pair / etcd: sets/s ${r.ratios.setsPerSec}x, watch entries/s ${r.ratios.entriesPerSec}x${d}`);
  return lines;
}
