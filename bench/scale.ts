/**
 * `spook-lab bench scale` (issue 16): one hub spookd with many authenticated peers and one
 * large register, Redis measured in the same run for memory per key.
 *
 *  hub      spookd on 127.0.0.1:basePort (fsync as given), every peer configured, one map
 *           register `kv`; started as a child process with a heap large enough for the keys;
 *  peers    bench/scale-peers.ts in a child process: per peer the project's own ETCP
 *           (EtcpEndpoint, PeerTable) and ESTP (HalfPair) cores on a UDP socket of its own at
 *           127.1.x.y:basePort+1, driven as spookd drives them;
 *  Redis    Debian's redis-server (`make redis-deps`), foreground on 127.0.0.1:basePort+2,
 *           no persistence, loaded with the same keys and values over pipelined RESP.
 *
 * Phases, each bounded in time: a 1-peer hub (the baseline of memory per pair); the N-peer
 * hub, all peers entangled (memory per pair = RSS difference / (N-1)); `commits` sets through
 * the hub's admin API spread over all pairs, `inflight` at once (p50/p99 commit latency at the
 * hub); `keys` keys set by peer 0 into its pair's register, stopped at `loadLimitMs` or when the
 * hub's RSS passes `hubRssLimitMb` (memory per key = RSS difference / keys the hub holds); the
 * same commits again (latency with the big register); the hub stopped (SIGSTOP) for
 * `outageMs`, then the time until every pair is entangled again at both ends. Everything it
 * starts it tears down on every path (and on SIGINT/SIGTERM).
 */
import { fork, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { connect } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { AdminClient } from '../client/admin-client.js';
import { encodeKey } from '../drivers/daemon/keys.js';
import { generateKeyPair } from '../crypto/primitives.js';
import { DEFAULT_MAX_VALUE_BYTES } from '../wire/constants.js';
import { ROOT } from '../testing/lab/netns.js';
import type { LoadResult, SwarmInit } from './scale-peers.js';

export interface ScaleBenchOptions {
  peers: number;
  /** Keys peer 0 sets into its pair's register (the target; what was reached is reported). */
  keys: number;
  valueBytes: number;
  /** Sets through the hub's admin API for the latency figures, spread over all pairs. */
  commits: number;
  inflight: number;
  outageMs: number;
  fsync: string;
  basePort: number;
  /** The most the key load may last (ms). */
  loadLimitMs: number;
  /** The key load stops when the hub's resident memory passes this (MiB). */
  hubRssLimitMb: number;
  /** Bound of every wait for pairs to (re-)entangle, and of each latency phase (ms). */
  waitMs: number;
  /** The load generator's peers come up one after another over this long (ms). */
  rampMs: number;
  redis: boolean;
  log?: (line: string) => void;
}

export interface Latency {
  /** Issued (all of `commits`, unless the time bound stopped the issuing). */
  commits: number;
  stopped: 'all issued' | 'time bound';
  committed: number;
  perSec: number;
  p50Ms: number;
  p99Ms: number;
  /**
   * The same sets split by which end sequences their pair: the hub, or the peer (then the hub
   * waits for the collapse round trip of the peers' process, one process speaking for every peer).
   */
  bySequencer: Record<'hub' | 'peer', { sets: number; p50Ms: number | null; p99Ms: number | null }>;
}

export interface ScaleBenchResult {
  date: string;
  loadAvg: number;
  fsync: string;
  peers: number;
  /** All N pairs entangled, from the peers' start (handshakes under the hub's DoS limits included); null: not within waitMs. */
  connectMs: number | null;
  /** Pairs entangled at both ends when all were, or at the bound (the rest of the run uses those). */
  entangledPeers: number;
  /** How the pairs stood at the hub and at the peers when the bound passed (null: all entangled). */
  notEntangled: { hub: Record<string, number>; peers: Record<string, number>; hubDrops: Record<string, number> } | null;
  hubRssOnePeerMb: number;
  hubRssPeersMb: number;
  memoryPerPairBytes: number;
  latency: Latency;
  keysTarget: number;
  /** Keys the hub's register holds after the load (what memory per key divides by). */
  keysReached: number;
  /** Keys the load generator saw committed within the load's bound. */
  keysCommitted: number;
  /** The hub's role on the pair that holds the large register (it sequences when it can). */
  bigPeerHubRole: string;
  loadStopped: string;
  loadMs: number;
  keysPerSec: number;
  /**
   * Datagrams the hub's socket dropped (receive buffer full: the hub did not read it in time) from
   * the load's start until its keys are all held. A snapshot written at once held the event loop
   * ~6 s at 8.5 × 10^6 keys: thousands dropped then; the snapshot is written in the background now.
   */
  hubSocketDropsDuringLoad: number;
  /** The loading peer's retransmission timeouts during the load (each resent a window of up to 256 Propose datagrams), and its datagrams. */
  loaderRetransmitTimeouts: number;
  loaderDatagramsSent: number;
  /** The hub's highest RSS during the load (sampled every 500 ms): a background snapshot's buffers included. */
  hubRssPeakMb: number;
  /** How long after the load a background snapshot still ran at the hub (memory per key is read after it ends). */
  snapshotAfterLoadMs: number;
  valueBytes: number;
  hubRssBeforeKeysMb: number;
  hubRssAfterKeysMb: number;
  memoryPerKeyBytes: number;
  /** The register's own count of its keys' and values' bytes, per key (what a full transfer carries). */
  stateBytesPerKey: number;
  latencyWithKeys: Latency;
  outageMs: number;
  /** From SIGCONT until the pairs entangled before the outage are all entangled again at both ends; null: not within waitMs. */
  reentangleAllMs: number | null;
  entangledAfterOutage: number;
  redis: {
    version: string;
    keys: number;
    usedMemoryPerKeyBytes: number;
    rssPerKeyBytes: number;
    /** MEMORY USAGE of one key (key, value and the dictionary entry). */
    memoryUsageSampleBytes: number;
    loadMs: number;
  } | null;
  /** Spook's hub RSS per key over Redis' used_memory per key (below 1: Spook leaner). */
  memoryPerKeyVsRedis: number | null;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const MB = 1024 * 1024;

/** Extra node flags for the hub or the peers' process (profiling: `--cpu-prof --cpu-prof-dir=DIR`). */
const nodeArgs = (env: string): string[] => (process.env[env] ?? '').split(' ').filter(Boolean);

/** A process' resident memory (bytes), from /proc. */
export function rssOf(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/** Datagrams the kernel dropped at the UDP sockets bound to `port` (receive buffer full): /proc/net/udp's and udp6's last column. */
export function udpSocketDrops(port: number): number {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, '0')}`;
  let drops = 0;
  for (const f of ['/proc/net/udp', '/proc/net/udp6']) {
    let text: string;
    try {
      text = readFileSync(f, 'utf8');
    } catch {
      continue; // no IPv6 here
    }
    for (const line of text.split('\n').slice(1)) {
      const cols = line.trim().split(/\s+/);
      if (cols.length > 2 && cols[1].endsWith(hex)) drops += Number(cols[cols.length - 1]) || 0;
    }
  }
  return drops;
}

/** Polls `check` every `everyMs` until it returns a value, failing after `limitMs` with `what`. */
async function until<T>(what: string, limitMs: number, check: () => Promise<T | undefined>, everyMs = 100): Promise<T> {
  const end = Date.now() + limitMs;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`bench scale: ${what} not within ${limitMs} ms`);
    await sleep(everyMs);
  }
}

/** Where virtual peer i binds: its own loopback address (distinct sources for the hub's handshake limits). */
const peerAddr = (i: number): string => `127.1.${1 + Math.floor(i / 250)}.${1 + (i % 250)}`;

interface Hub {
  proc: ChildProcess;
  admin: AdminClient;
}

/** The generator child: IPC requests by id. */
class SwarmProc {
  private nextId = 1;
  private readonly waiting = new Map<number, (m: Record<string, unknown>) => void>();
  private constructor(readonly proc: ChildProcess) {
    proc.on('message', (m: Record<string, unknown>) => {
      const id = m.id as number | undefined;
      if (id !== undefined) this.waiting.get(id)?.(m);
      this.waiting.delete(id!);
    });
  }

  static async start(init: SwarmInit, heapMb: number): Promise<SwarmProc> {
    const proc = fork(join(ROOT, 'dist/bench/scale-peers.js'), [], {
      // SPOOK_SCALE_PEERS_NODE_ARGS: extra node flags for the peers' process (e.g. --cpu-prof).
      execArgv: [`--max-old-space-size=${heapMb}`, ...nodeArgs('SPOOK_SCALE_PEERS_NODE_ARGS')],
      stdio: 'inherit',
    });
    const s = new SwarmProc(proc);
    const ready = new Promise<void>((resolve, reject) => {
      proc.once('message', () => resolve());
      proc.once('exit', (c) => reject(new Error(`the peers' process exited with ${c} before it was ready`)));
    });
    proc.send(init);
    await Promise.race([ready, sleep(60_000).then(() => Promise.reject(new Error("the peers' process was not ready within 60 s")))]);
    return s;
  }

  request<T>(m: Record<string, unknown>, limitMs: number): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      const t = setTimeout(() => {
        this.waiting.delete(id);
        reject(new Error(`the peers' process did not answer ${String(m.cmd)} within ${limitMs} ms`));
      }, limitMs);
      this.waiting.set(id, (r) => {
        clearTimeout(t);
        if (typeof r.error === 'string') reject(new Error(`peers' process: ${r.error}`));
        else resolve(r as T);
      });
      this.proc.send({ ...m, id });
    });
  }

  send(m: Record<string, unknown>): void {
    if (this.proc.connected) this.proc.send(m);
  }

  kill(): void {
    this.proc.kill('SIGKILL');
  }
}

export async function runScaleBench(o: ScaleBenchOptions): Promise<ScaleBenchResult> {
  const log = o.log ?? (() => undefined);
  const dir = mkdtempSync(join(tmpdir(), 'spook-bench-scale-'));
  const procs = new Set<ChildProcess>();
  const killAll = (): void => {
    for (const p of procs) {
      try {
        p.kill('SIGCONT');
        p.kill('SIGKILL');
      } catch {
        /* gone */
      }
    }
  };
  const onSig = (sig: NodeJS.Signals): void => {
    killAll();
    rmSync(dir, { recursive: true, force: true });
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', onSig);
  process.once('SIGTERM', onSig);
  const clients: AdminClient[] = [];

  const hubKey = generateKeyPair();
  const peerKeys = Array.from({ length: o.peers }, () => generateKeyPair());
  const maxKeys = Math.max(1_000_000, o.keys + o.commits * 2 + 1000);
  const maxBytes = 64 * 1024 * MB;
  const register = { name: 'kv', kind: 'map' as const, maxPending: 65_536, maxKeys, maxBytes };
  const heapMb = Math.max(2048, o.hubRssLimitMb + 2048);
  const hubAddr = { address: '127.0.0.1', port: o.basePort };

  const startHub = async (n: number, tag: string): Promise<Hub> => {
    const keyFile = join(dir, 'hub.key');
    writeFileSync(keyFile, `${encodeKey(hubKey.privateKey)}\n`, { mode: 0o600 });
    const socket = join(dir, `${tag}.sock`);
    const cfg = {
      listen: `${hubAddr.address}:${hubAddr.port}`,
      privateKeyFile: keyFile,
      dataDir: join(dir, tag),
      adminSocket: socket,
      fsync: o.fsync,
      logLevel: 'warn',
      peers: peerKeys
        .slice(0, n)
        .map((k, i) => ({ name: `p${i}`, publicKey: encodeKey(k.publicKey), endpoint: `${peerAddr(i)}:${o.basePort + 1}` })),
      registers: [register],
    };
    mkdirSync(cfg.dataDir, { recursive: true });
    writeFileSync(join(dir, `${tag}.json`), JSON.stringify(cfg));
    const proc = spawn(
      process.execPath,
      [
        `--max-old-space-size=${heapMb}`,
        ...nodeArgs('SPOOK_SCALE_HUB_NODE_ARGS'),
        join(ROOT, 'bin/spookd'),
        '--config',
        join(dir, `${tag}.json`),
      ],
      {
        stdio: ['ignore', 'ignore', 'inherit'],
      },
    );
    procs.add(proc);
    const admin = await until('the hub admin socket', 60_000, () => {
      if (proc.exitCode !== null) throw new Error(`the hub spookd exited with ${proc.exitCode}`);
      return AdminClient.connect(socket).catch(() => undefined);
    });
    clients.push(admin);
    return { proc, admin };
  };
  /** SIGTERM (a profiled process writes its profile), SIGKILL after 10 s. */
  const stopProc = async (p: ChildProcess): Promise<void> => {
    if (p.exitCode === null && p.signalCode === null) {
      const gone = new Promise<void>((r) => p.once('exit', () => r()));
      p.kill('SIGCONT');
      p.kill('SIGTERM');
      const t = setTimeout(() => p.kill('SIGKILL'), 10_000);
      await gone;
      clearTimeout(t);
    }
    procs.delete(p);
  };
  const startSwarm = async (n: number): Promise<SwarmProc> => {
    const init: SwarmInit = {
      hub: { ...hubAddr, publicKey: encodeKey(hubKey.publicKey) },
      peers: peerKeys.slice(0, n).map((k, i) => ({ privateKey: encodeKey(k.privateKey), address: peerAddr(i), port: o.basePort + 1 })),
      register: {
        name: 'kv',
        kind: 'map',
        policy: 'buffer',
        maxPending: register.maxPending,
        log: { maxRecords: 65_536, maxBytes: 256 * MB },
        quota: { maxKeys, maxBytes, maxValueBytes: DEFAULT_MAX_VALUE_BYTES },
      },
      timing: { keepaliveMs: 1000, silenceMs: 5000 },
      spreadMs: n === 1 ? 0 : o.rampMs,
    };
    const s = await SwarmProc.start(init, heapMb);
    procs.add(s.proc);
    return s;
  };
  /** Every pair entangled at both ends (the peers' cores and the hub's status). */
  /** The peers (names) entangled at the hub whose load-generator end is entangled too, and how the rest stand. */
  const standing = async (
    hub: Hub,
    swarm: SwarmProc,
  ): Promise<{ both: string[]; hub: Record<string, number>; peers: Record<string, number>; hubDrops: Record<string, number> }> => {
    const st = await swarm.request<{ entangledIndexes: number[]; states: Record<string, number> }>({ cmd: 'status' }, 30_000);
    const hs = await hub.admin.request('status', {}, { timeoutMs: 30_000 });
    const atPeers = new Set(st.entangledIndexes.map((i) => `p${i}`));
    const count: Record<string, number> = {};
    for (const p of hs.pairs) count[p.state] = (count[p.state] ?? 0) + 1;
    const both = hs.pairs.filter((p) => (p.state === 'ENTANGLED' || p.state === 'COLLAPSING') && atPeers.has(p.peer)).map((p) => p.peer);
    return { both, hub: count, peers: st.states, hubDrops: hs.drops };
  };
  /**
   * Waits (at most waitMs) until `want` pairs are entangled at both ends. Returns the time it took
   * (null at the bound) and the pairs entangled then, with how the others stood.
   */
  const waitEntangled = async (
    hub: Hub,
    swarm: SwarmProc,
    want: number,
  ): Promise<{ ms: number | null; peers: string[]; stood: Awaited<ReturnType<typeof standing>> }> => {
    const t0 = performance.now();
    const end = Date.now() + o.waitMs;
    for (;;) {
      const s = await standing(hub, swarm);
      if (s.both.length >= want) return { ms: Math.round(performance.now() - t0), peers: s.both, stood: s };
      if (Date.now() > end) return { ms: null, peers: s.both, stood: s };
      await sleep(50);
    }
  };
  const latency = async (hub: Hub, peers: string[], hubSequences: ReadonlySet<string>): Promise<Latency> => {
    const lat = new Float64Array(o.commits);
    let next = 0;
    let committed = 0;
    const value = 'v'.repeat(o.valueBytes);
    const t0 = performance.now();
    const end = t0 + o.waitMs;
    await Promise.all(
      Array.from({ length: Math.min(o.inflight, o.commits) }, async () => {
        while (next < o.commits) {
          if (performance.now() > end) return; // the time bound: what was issued is reported
          const i = next++;
          const s = performance.now();
          const r = await hub.admin
            .request(
              'set',
              { peer: peers[i % peers.length], register: 'kv', key: `lat-${i}`, value, timeoutMs: 30_000 },
              { timeoutMs: 35_000 },
            )
            .catch(() => ({ verdict: 'no answer' })); // counted as not committed, at the time it took
          lat[i] = performance.now() - s;
          if (r.verdict === 'committed') committed++;
        }
      }),
    );
    const dt = performance.now() - t0;
    const pct = (xs: Float64Array, p: number): number | null =>
      xs.length === 0 ? null : Number(xs[Math.min(xs.length - 1, Math.floor(p * xs.length))].toFixed(2));
    const split = (hubSide: boolean): Latency['bySequencer']['hub'] => {
      const xs = Float64Array.from(lat.subarray(0, next).filter((_, i) => hubSequences.has(peers[i % peers.length]) === hubSide)).sort();
      return { sets: xs.length, p50Ms: pct(xs, 0.5), p99Ms: pct(xs, 0.99) };
    };
    const bySequencer = { hub: split(true), peer: split(false) }; // before the sort below, which is in place
    const done = lat.subarray(0, next).sort();
    return {
      commits: next,
      stopped: next < o.commits ? 'time bound' : 'all issued',
      committed,
      perSec: Math.round(committed / (dt / 1000)),
      p50Ms: pct(done, 0.5) ?? 0,
      p99Ms: pct(done, 0.99) ?? 0,
      bySequencer,
    };
  };
  let bigPeer = 'p0';
  const hubRegister = async (hub: Hub): Promise<{ size: number; stateBytes: number; snapshotting: boolean }> =>
    (await hub.admin.request('pair', { peer: bigPeer }, { timeoutMs: 60_000 })).registers[0];
  const hubSize = async (hub: Hub): Promise<number> => (await hubRegister(hub)).size;

  try {
    const loadAvg = Number(loadavg()[0].toFixed(2));
    // 1. The memory baseline: the hub with one peer, entangled.
    log('hub with 1 peer (memory baseline)');
    let hub = await startHub(1, 'hub1');
    let swarm = await startSwarm(1);
    if ((await waitEntangled(hub, swarm, 1)).ms === null)
      throw new Error(`bench scale: the 1-peer pair did not entangle within ${o.waitMs} ms`);
    await sleep(1000);
    const rssOne = rssOf(hub.proc.pid!);
    swarm.kill();
    await stopProc(swarm.proc);
    hub.admin.close();
    await stopProc(hub.proc);

    // 2. The hub with every peer.
    log(`hub with ${o.peers} peers`);
    hub = await startHub(o.peers, 'hub');
    swarm = await startSwarm(o.peers);
    const connected = await waitEntangled(hub, swarm, o.peers);
    const connectMs = connected.ms;
    const entangled = connected.peers;
    const notEntangled =
      connectMs === null ? { hub: connected.stood.hub, peers: connected.stood.peers, hubDrops: connected.stood.hubDrops } : null;
    if (entangled.length === 0) throw new Error(`bench scale: no pair entangled within ${o.waitMs} ms (${JSON.stringify(notEntangled)})`);
    await sleep(1000);
    const rssPeers = rssOf(hub.proc.pid!);
    log(
      connectMs === null
        ? `only ${entangled.length} of ${o.peers} pairs entangled within ${o.waitMs} ms: ${JSON.stringify(notEntangled)}`
        : `all ${o.peers} entangled in ${connectMs} ms`,
    );
    log(`hub RSS ${Math.round(rssPeers / MB)} MiB (1 peer: ${Math.round(rssOne / MB)} MiB)`);
    // The large register on a pair the hub sequences (the hub commits every key; the role follows
    // from the two keys, random per run, so a fixed peer would make the figure a coin toss).
    const roles = await hub.admin.request('pairs', {}, { timeoutMs: 60_000 });
    const set = new Set(entangled);
    bigPeer = roles.find((p) => set.has(p.peer) && p.role === 'sequencer')?.peer ?? entangled[0];
    const hubSequences = new Set(roles.filter((p) => p.role === 'sequencer').map((p) => p.peer));
    const bigRole = roles.find((p) => p.peer === bigPeer)!.role;

    // 3. Commit latency at the hub.
    const lat1 = await latency(hub, entangled, hubSequences);
    log(`${lat1.committed} commits through the hub: ${lat1.perSec}/s, p50 ${lat1.p50Ms} ms, p99 ${lat1.p99Ms} ms`);

    // 4. The big register: peer 0 sets keys until done, the time bound or the hub's memory bound.
    const size0 = await hubSize(hub);
    const rssBefore = rssOf(hub.proc.pid!);
    const dropsBefore = udpSocketDrops(o.basePort);
    log(
      `loading ${o.keys} keys through ${bigPeer}, the hub ${bigRole} (at most ${o.loadLimitMs} ms, hub RSS at most ${o.hubRssLimitMb} MiB)`,
    );
    const pid = hub.proc.pid!;
    let watching = true;
    let rssPeak = rssBefore;
    const watch = (async (): Promise<void> => {
      while (watching) {
        rssPeak = Math.max(rssPeak, rssOf(pid));
        // The peers' process holds a replica of the same register: it is bounded alike.
        if (rssOf(pid) > o.hubRssLimitMb * MB || rssOf(swarm.proc.pid!) > o.hubRssLimitMb * MB) swarm.send({ cmd: 'halt' });
        await sleep(500);
      }
    })();
    const loaded = await swarm
      .request<LoadResult>(
        { cmd: 'load', peer: Number(bigPeer.slice(1)), keys: o.keys, valueBytes: o.valueBytes, limitMs: o.loadLimitMs },
        2 * o.loadLimitMs + 60_000, // the bound, then as long again for the pending candidates to be decided
      )
      .finally(() => (watching = false));
    await watch;
    // The hub holds what p0 saw committed (its Status and collapses settle within the wait bound).
    // (At most waitMs: a hub still behind then is measured with what it holds.)
    let sizeAfter = await hubSize(hub);
    for (const end = Date.now() + o.waitMs; sizeAfter - size0 < loaded.committed && Date.now() < end; sizeAfter = await hubSize(hub))
      await sleep(500);
    const hubSocketDropsDuringLoad = udpSocketDrops(o.basePort) - dropsBefore;
    // Memory per key without a snapshot's buffers: after any background snapshot has ended (bounded).
    const snapWait = performance.now();
    for (const end = Date.now() + o.waitMs; (await hubRegister(hub)).snapshotting && Date.now() < end;) await sleep(200);
    const snapshotAfterLoadMs = Math.round(performance.now() - snapWait);
    await sleep(1000);
    const rssAfter = rssOf(hub.proc.pid!);
    const keysReached = sizeAfter - size0;
    const stateBytes = (await hubRegister(hub)).stateBytes;
    log(
      `${loaded.committed} keys committed in ${loaded.ms} ms (${loaded.stopped}), ${keysReached} held by the hub; hub RSS ${Math.round(rssAfter / MB)} MiB`,
    );

    // 5. Latency with the big register in place.
    const lat2 = await latency(hub, entangled, hubSequences);
    log(`with the keys: ${lat2.perSec}/s, p50 ${lat2.p50Ms} ms, p99 ${lat2.p99Ms} ms`);

    // 6. A hub outage.
    log(`hub stopped for ${o.outageMs} ms`);
    hub.proc.kill('SIGSTOP');
    await sleep(o.outageMs);
    hub.proc.kill('SIGCONT');
    const again = await waitEntangled(hub, swarm, entangled.length);
    const reentangleAllMs = again.ms;
    log(
      reentangleAllMs === null
        ? `only ${again.peers.length} of ${entangled.length} pairs entangled again within ${o.waitMs} ms`
        : `all ${entangled.length} re-entangled ${reentangleAllMs} ms after SIGCONT`,
    );
    swarm.send({ cmd: 'exit' });
    await stopProc(swarm.proc);
    hub.admin.close();
    await stopProc(hub.proc);

    // 7. Redis with the same keys.
    const redis = o.redis ? await redisBaseline(o.basePort + 2, keysReached, o.valueBytes, o.loadLimitMs, procs, log) : null;
    const perKey = Math.round((rssAfter - rssBefore) / Math.max(1, keysReached));
    return {
      date: new Date().toISOString(),
      loadAvg,
      fsync: o.fsync,
      peers: o.peers,
      connectMs,
      entangledPeers: entangled.length,
      notEntangled,
      hubRssOnePeerMb: Math.round(rssOne / MB),
      hubRssPeersMb: Math.round(rssPeers / MB),
      memoryPerPairBytes: o.peers > 1 ? Math.round((rssPeers - rssOne) / (o.peers - 1)) : 0,
      latency: lat1,
      keysTarget: o.keys,
      keysReached,
      keysCommitted: loaded.committed,
      bigPeerHubRole: bigRole,
      loadStopped: loaded.stopped,
      loadMs: loaded.ms,
      keysPerSec: Math.round(keysReached / (loaded.ms / 1000)),
      hubSocketDropsDuringLoad,
      loaderRetransmitTimeouts: loaded.retransmitTimeouts,
      loaderDatagramsSent: loaded.datagramsSent,
      hubRssPeakMb: Math.round(rssPeak / MB),
      snapshotAfterLoadMs,
      valueBytes: o.valueBytes,
      hubRssBeforeKeysMb: Math.round(rssBefore / MB),
      hubRssAfterKeysMb: Math.round(rssAfter / MB),
      memoryPerKeyBytes: perKey,
      stateBytesPerKey: Math.round(stateBytes / Math.max(1, sizeAfter)),
      latencyWithKeys: lat2,
      outageMs: o.outageMs,
      reentangleAllMs,
      entangledAfterOutage: again.peers.length,
      redis,
      memoryPerKeyVsRedis: redis && Number((perKey / redis.usedMemoryPerKeyBytes).toFixed(2)),
    };
  } finally {
    process.off('SIGINT', onSig);
    process.off('SIGTERM', onSig);
    for (const c of clients) c.close();
    killAll();
    rmSync(dir, { recursive: true, force: true });
  }
}

// ---- Redis ----

/** RESP: one command as an array of bulk strings. */
const resp = (...args: string[]): string => `*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`;

/** A minimal RESP connection: pipelined commands, replies counted (and the last one kept) as they arrive. */
class Resp {
  private buf = '';
  private replies: string[] = [];
  private wake: (() => void) | undefined;
  private constructor(private readonly sock: ReturnType<typeof connect>) {
    sock.setEncoding('utf8');
    sock.on('data', (d: string) => {
      this.buf += d;
      for (;;) {
        const r = this.take();
        if (r === undefined) break;
        this.replies.push(r);
      }
      this.wake?.();
    });
  }
  static open(port: number): Promise<Resp> {
    return new Promise((resolve, reject) => {
      const s = connect(port, '127.0.0.1', () => resolve(new Resp(s)));
      s.once('error', reject);
    });
  }
  /** One whole reply off the buffer (simple, error, integer, bulk), or undefined if incomplete. */
  private take(): string | undefined {
    const eol = this.buf.indexOf('\r\n');
    if (eol < 0) return undefined;
    const head = this.buf.slice(0, eol);
    if (head[0] === '$') {
      const n = Number(head.slice(1));
      if (n < 0) {
        this.buf = this.buf.slice(eol + 2);
        return '';
      }
      // Bulk lengths are bytes; INFO and MEMORY replies are ASCII.
      if (this.buf.length < eol + 2 + n + 2) return undefined;
      const body = this.buf.slice(eol + 2, eol + 2 + n);
      this.buf = this.buf.slice(eol + 4 + n);
      return body;
    }
    this.buf = this.buf.slice(eol + 2);
    if (head[0] === '-') return `ERR ${head.slice(1)}`;
    return head.slice(1);
  }
  /** Sends `cmds` and resolves with their replies, failing past `limitMs`. */
  async run(cmds: string, count: number, limitMs: number): Promise<string[]> {
    const end = Date.now() + limitMs;
    this.sock.write(cmds);
    while (this.replies.length < count) {
      if (Date.now() > end) throw new Error(`redis: ${this.replies.length} of ${count} replies within ${limitMs} ms`);
      await new Promise<void>((r) => {
        this.wake = r;
        setTimeout(r, 100);
      });
    }
    const out = this.replies.splice(0, count);
    const err = out.find((r) => r.startsWith('ERR '));
    if (err) throw new Error(`redis: ${err}`);
    return out;
  }
  close(): void {
    this.sock.destroy();
  }
}

const infoField = (info: string, field: string): number => {
  const m = new RegExp(`^${field}:(\\d+)`, 'm').exec(info);
  if (!m) throw new Error(`redis: no ${field} in INFO memory`);
  return Number(m[1]);
};

async function redisBaseline(
  port: number,
  keys: number,
  valueBytes: number,
  limitMs: number,
  procs: Set<ChildProcess>,
  log: (l: string) => void,
): Promise<NonNullable<ScaleBenchResult['redis']>> {
  const proc = spawn(
    'redis-server',
    ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--daemonize', 'no'],
    {
      stdio: ['ignore', 'pipe', 'inherit'],
    },
  );
  const spawned = new Promise<void>((resolve, reject) => {
    proc.once('spawn', () => resolve());
    proc.once('error', (e) =>
      reject(new Error(`cannot run redis-server (${e.message}); install it with \`make redis-deps\` (Debian's redis-server)`)),
    );
  });
  procs.add(proc);
  try {
    await spawned;
    const r = await until('redis-server answering', 30_000, () => Resp.open(port).catch(() => undefined));
    try {
      const info0 = (await r.run(resp('INFO', 'server'), 1, 10_000))[0];
      const version = /redis_version:(\S+)/.exec(info0)?.[1] ?? 'unknown';
      const mem0 = (await r.run(resp('INFO', 'memory'), 1, 10_000))[0];
      const value = 'v'.repeat(valueBytes);
      const t0 = performance.now();
      const end = Date.now() + limitMs;
      for (let i = 0; i < keys;) {
        if (Date.now() > end) throw new Error(`redis: ${i} of ${keys} keys loaded within ${limitMs} ms`);
        const n = Math.min(10_000, keys - i);
        let batch = '';
        for (let j = 0; j < n; j++) batch += resp('SET', `key-${i + j}`, value);
        await r.run(batch, n, limitMs);
        i += n;
      }
      const loadMs = Math.round(performance.now() - t0);
      const mem1 = (await r.run(resp('INFO', 'memory'), 1, 10_000))[0];
      const sample = Number((await r.run(resp('MEMORY', 'USAGE', 'key-0'), 1, 10_000))[0]);
      const used = infoField(mem1, 'used_memory') - infoField(mem0, 'used_memory');
      const rss = infoField(mem1, 'used_memory_rss') - infoField(mem0, 'used_memory_rss');
      log(`redis ${version}: ${keys} keys in ${loadMs} ms, used_memory +${Math.round(used / MB)} MiB`);
      return {
        version,
        keys,
        usedMemoryPerKeyBytes: Math.round(used / Math.max(1, keys)),
        rssPerKeyBytes: Math.round(rss / Math.max(1, keys)),
        memoryUsageSampleBytes: sample,
        loadMs,
      };
    } finally {
      r.close();
    }
  } finally {
    const gone = new Promise<void>((res) => (proc.exitCode !== null || proc.signalCode !== null ? res() : proc.once('exit', () => res())));
    proc.kill('SIGKILL');
    await gone;
    procs.delete(proc);
  }
}

/** The human table. */
export function formatScaleBench(r: ScaleBenchResult): string[] {
  const n = (x: number): string => x.toLocaleString('en-US');
  const side = (x: Latency['bySequencer']['hub']): string => `${n(x.sets)} sets, p50 ${x.p50Ms ?? '-'} ms, p99 ${x.p99Ms ?? '-'} ms`;
  const lat = (l: Latency): string =>
    `${n(l.committed)}/${n(l.commits)} committed (${l.stopped}), ${n(l.perSec)}/s, p50 ${l.p50Ms} ms, p99 ${l.p99Ms} ms` +
    ` (pairs the hub sequences: ${side(l.bySequencer.hub)}; the peers: ${side(l.bySequencer.peer)})`;
  return [
    `hub spookd, fsync ${r.fsync}, ${n(r.peers)} peers; load average ${r.loadAvg} at the start`,
    r.connectMs === null
      ? `pairs entangled              only ${n(r.entangledPeers)} of ${n(r.peers)} within the bound: ${JSON.stringify(r.notEntangled)}`
      : `all pairs entangled          ${n(r.connectMs)} ms`,
    `hub RSS                      ${n(r.hubRssOnePeerMb)} MiB with 1 peer, ${n(r.hubRssPeersMb)} MiB with ${n(r.peers)}: ${n(r.memoryPerPairBytes)} B per pair`,
    `commits at the hub           ${lat(r.latency)}`,
    `keys in one register         ${n(r.keysReached)} of ${n(r.keysTarget)} (${r.loadStopped}; the hub ${r.bigPeerHubRole} of that pair) in ${n(r.loadMs)} ms, ${n(r.keysPerSec)} keys/s, ${r.valueBytes} B values`,
    `loading peer                 ${n(r.loaderDatagramsSent)} datagrams sent, ${n(r.loaderRetransmitTimeouts)} retransmission timeouts`,
    `hub socket drops in the load ${n(r.hubSocketDropsDuringLoad)} datagrams; hub RSS at most ${n(r.hubRssPeakMb)} MiB; a snapshot ran ${n(r.snapshotAfterLoadMs)} ms after it`,
    `hub RSS for the keys         ${n(r.hubRssBeforeKeysMb)} -> ${n(r.hubRssAfterKeysMb)} MiB: ${n(r.memoryPerKeyBytes)} B per key (register stateBytes ${n(r.stateBytesPerKey)} B per key)`,
    r.redis
      ? `redis ${r.redis.version}                  ${n(r.redis.usedMemoryPerKeyBytes)} B per key (used_memory), ${n(r.redis.rssPerKeyBytes)} B (RSS), MEMORY USAGE ${r.redis.memoryUsageSampleBytes} B; Spook/Redis ${r.memoryPerKeyVsRedis}x`
      : 'redis                        skipped',
    `commits with the keys        ${lat(r.latencyWithKeys)}`,
    r.reentangleAllMs === null
      ? `hub outage ${n(r.outageMs)} ms       only ${n(r.entangledAfterOutage)} of ${n(r.entangledPeers)} entangled again within the bound`
      : `hub outage ${n(r.outageMs)} ms       all ${n(r.entangledPeers)} entangled pairs entangled again ${n(r.reentangleAllMs)} ms after SIGCONT`,
  ];
}
