/**
 * `spook-lab bench wrap --only speed` (issue 17, "faster than the tunnels users know"): two
 * hosts in namespaces joined by a veth, a spookd on each, the client on a, the servers on b.
 * Every figure beside its baseline from the same run:
 *
 *  bulk        one transfer of `bytes` a → b (a Node sink on b): direct TCP, through a wrapper,
 *              through `ssh -L` (OpenSSH, default cipher) and through a userspace WireGuard
 *              tunnel (Debian's wireguard-go on a TUN device in each namespace, configured with
 *              `wg` + `ip` on its own subnet over the same veth);
 *  connections new connections per second: a bounded loop of connect, one 64-byte request
 *              echoed, close (CONNS_PARALLEL in flight), direct vs wrapped, and through ssh -L,
 *              wireguard-go and the relay floor; and the p50/p99 of one such request on a new
 *              connection, one at a time, direct vs wrapped;
 *  pgbench     tps of `pgbench -S` (select-only, 4 clients), direct vs wrapped, and through
 *              ssh -L, wireguard-go and the relay floor.
 * The relay floor (bench/relay-floor.ts) is two plain C relays in a row, no encryption: what a
 * relay pair costs per byte and per request without encryption or recovery (not a floor for
 * connection set-up: it opens a TCP connection per hop, where ssh -L opens a channel).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';
import { Lab, sleep, until } from '../testing/lab/netns.js';
import { nsExec, nsRun, startPostgres, startSshd } from '../testing/lab/servers.js';
import { BULK_CLIENT, startSshForward } from './wrap.js';
import { startRelayFloor } from './relay-floor.js';

export interface WrapSpeedResult {
  bytes: number;
  directMBps: number;
  wrapMBps: number;
  sshForwardMBps: number;
  wireguardMBps: number;
  /** Goal: > 1 (above ssh -L). */
  wrapVsSsh: number;
  /** Goal: > 1 (above wireguard-go). */
  wrapVsWireguard: number;
  wrapVsDirect: number;
  /**
   * CPU (user + system, ms) the tunnel's own processes spent per GiB of the bulk transfer:
   * both spookd; ssh and sshd (with its children); both wireguard-go. Less sensitive to a
   * loaded machine than MB/s: on an idle one the throughput follows it.
   */
  wrapCpuMsPerGiB: number;
  sshCpuMsPerGiB: number;
  wireguardCpuMsPerGiB: number;
  /** The kernel's part (system time) of each. */
  wrapSysMsPerGiB: number;
  sshSysMsPerGiB: number;
  wireguardSysMsPerGiB: number;
  connections: number;
  connsParallel: number;
  directConnsPerSec: number;
  wrapConnsPerSec: number;
  /** Goal: >= 0.5. */
  wrapVsDirectConns: number;
  /** The same loop through ssh -L, wireguard-go (0 when skipped) and the relay floor: the tunnels users know, and a plain relay pair. */
  sshConnsPerSec: number;
  wireguardConnsPerSec: number;
  floorConnsPerSec: number;
  /** CPU (µs) their processes spent per connection (ssh and sshd; both wireguard-go; both floor relays). */
  sshCpuUsPerConn: number;
  wireguardCpuUsPerConn: number;
  floorCpuUsPerConn: number;
  /** CPU both spookd spent per wrapped connection (µs): what a quiet machine's rate follows. */
  wrapCpuUsPerConn: number;
  /** Connect-to-echo time of those connections, CONNS_PARALLEL in flight. */
  directParallelP50Ms: number;
  wrapParallelP50Ms: number;
  latencySamples: number;
  directNewConnP50Ms: number;
  wrapNewConnP50Ms: number;
  directNewConnP99Ms: number;
  wrapNewConnP99Ms: number;
  pgbenchSeconds: number;
  pgbenchDirectTps: number;
  pgbenchWrapTps: number;
  /** Goal: >= 0.5. */
  wrapVsDirectPgbench: number;
  /** The same pgbench through ssh -L, wireguard-go (0 when skipped) and the relay floor. */
  pgbenchSshTps: number;
  pgbenchWireguardTps: number;
  pgbenchFloorTps: number;
  /**
   * CPU (µs, user + system) the tunnel's own processes spent per pgbench transaction: both
   * spookd; ssh and sshd; both wireguard-go; both floor relays. What a quiet machine's tps follows.
   */
  pgbenchWrapCpuUsPerTx: number;
  pgbenchSshCpuUsPerTx: number;
  pgbenchWireguardCpuUsPerTx: number;
  pgbenchFloorCpuUsPerTx: number;
  /** Carrier records both ways per wrapped pgbench transaction (load-independent). */
  pgbenchRecordsPerTx: number;
  /** The carrier's AEAD as the serving side's wrap-stats reports it. */
  carrierCipher: string;
}

export interface WrapSpeedOptions {
  bytes: number;
  connections: number;
  pgbenchSeconds: number;
  basePort: number;
  /** Skip the WireGuard baseline (wireguard-go absent): its figure is then 0. */
  wireguard?: boolean;
  log?: (line: string) => void;
}

const SINK_DIRECT = 9300;
const SINK_WRAPPED = 9301;
const ECHO_DIRECT = 9310;
const ECHO_WRAPPED = 9311;
const FORWARD_PORT = 9320;
const FORWARD_ECHO = 9321;
const FORWARD_PG = 9322;
/** The relay floor's ports: a's local one, then b's middle one, per route. */
const FLOOR_ECHO = { local: 9330, middle: 9331 };
const FLOOR_PG = { local: 9332, middle: 9333 };
const SSH_PORT = 2232;
const PG_PORT = 5442;
const WG_PORT = 51820;
const CONNS_PARALLEL = 8;
const LATENCY_SAMPLES = 300;

/** Counts what each connection sends and answers with the count at its end; echoes on the echo ports. */
const SERVERS = `
import { createServer } from 'node:net';
const [sinks, echoes] = [process.argv[1].split(','), process.argv[2].split(',')];
for (const port of sinks)
  createServer({ allowHalfOpen: true }, (s) => {
    let n = 0;
    s.on('data', (d) => (n += d.length));
    s.on('end', () => s.end(String(n)));
    s.on('error', () => {});
  }).listen(Number(port), '0.0.0.0');
for (const port of echoes)
  createServer((s) => {
    s.setNoDelay(true);
    s.on('data', (d) => s.write(d));
    s.on('error', () => {});
  }).listen(Number(port), '0.0.0.0');
`;

/**
 * n connections, \`parallel\` in flight: connect, send 64 bytes, wait for their echo, close.
 * Prints the total time and each connection's connect-to-echo time.
 */
export const CONN_CLIENT = `
import { connect } from 'node:net';
const [host, port, n, parallel] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3]), Number(process.argv[4])];
const req = Buffer.alloc(64, 1);
const lat = [];
let started = 0, done = 0;
const t0 = performance.now();
const one = () => {
  if (started >= n) return;
  started++;
  const t = performance.now();
  const s = connect({ host, port, noDelay: true });
  let got = 0;
  s.setTimeout(30000, () => { console.error('connection timed out'); process.exit(1); });
  s.on('connect', () => s.write(req));
  s.on('data', (d) => { got += d.length; if (got >= req.length) { lat.push(performance.now() - t); s.end(); } });
  s.on('error', (e) => { console.error(e.message); process.exit(1); });
  s.on('close', () => {
    if (got < req.length) { console.error('closed before the echo'); process.exit(1); }
    if (++done === n) console.log(JSON.stringify({ ms: performance.now() - t0, lat }));
    else one();
  });
};
for (let i = 0; i < parallel; i++) one();
`;

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;

/** CPU ms (user + system, and system alone) of these processes and all their descendants, from /proc. */
function treeCpuMs(roots: number[]): { all: number; sys: number } {
  const stats = new Map<number, { ppid: number; ticks: number; sys: number }>();
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const st = readFileSync(`/proc/${d}/stat`, 'utf8');
      const f = st.slice(st.lastIndexOf(')') + 2).split(' '); // fields from state (3rd) on
      stats.set(Number(d), { ppid: Number(f[1]), ticks: Number(f[11]) + Number(f[12]), sys: Number(f[12]) });
    } catch {
      // gone meanwhile
    }
  }
  const inTree = new Set(roots);
  for (let grew = true; grew;) {
    grew = false;
    for (const [pid, s] of stats)
      if (!inTree.has(pid) && inTree.has(s.ppid)) {
        inTree.add(pid);
        grew = true;
      }
  }
  let ticks = 0;
  let sys = 0;
  for (const pid of inTree) {
    ticks += stats.get(pid)?.ticks ?? 0;
    sys += stats.get(pid)?.sys ?? 0;
  }
  return { all: (ticks * 1000) / CLK_TCK, sys: (sys * 1000) / CLK_TCK };
}

/** What `f` returns, and the CPU (ms: all, and system alone) the `tunnel` processes spent meanwhile. */
async function withCpu<T>(tunnel: number[], f: () => Promise<T>): Promise<{ r: T; cpu: { all: number; sys: number } }> {
  const c0 = treeCpuMs(tunnel);
  const r = await f();
  const c1 = treeCpuMs(tunnel);
  return { r, cpu: { all: c1.all - c0.all, sys: c1.sys - c0.sys } };
}

/** The bulk transfer's MB/s and the CPU the `tunnel` processes spent on it, per GiB. */
async function bulkWithCpu(
  lab: Lab,
  host: string,
  port: number,
  bytes: number,
  tunnel: number[],
): Promise<{ mbps: number; cpuMsPerGiB: number; sysMsPerGiB: number }> {
  const { r: mbps, cpu } = await withCpu(tunnel, () => bulk(lab, host, port, bytes));
  return { mbps, cpuMsPerGiB: (cpu.all * 2 ** 30) / bytes, sysMsPerGiB: (cpu.sys * 2 ** 30) / bytes };
}

async function nodeIn(lab: Lab, script: string, args: (string | number)[], timeoutMs: number): Promise<string> {
  return nsExec(lab.host('a').ns, process.execPath, ['--input-type=module', '-e', script, ...args.map(String)], { timeoutMs });
}

async function bulk(lab: Lab, host: string, port: number, bytes: number): Promise<number> {
  const r = JSON.parse(await nodeIn(lab, BULK_CLIENT, [host, port, bytes], 900_000)) as { ms: number; count: number };
  if (r.count !== bytes) throw new Error(`the sink counted ${r.count} bytes of ${bytes} (${host}:${port})`);
  return bytes / 1e6 / (r.ms / 1000);
}

async function conns(lab: Lab, host: string, port: number, n: number, parallel: number): Promise<{ perSec: number; lat: number[] }> {
  const r = JSON.parse(await nodeIn(lab, CONN_CLIENT, [host, port, n, parallel], 300_000)) as { ms: number; lat: number[] };
  return { perSec: n / (r.ms / 1000), lat: r.lat.sort((x, y) => x - y) };
}

/** `conns` with CONNS_PARALLEL in flight, and the CPU `tunnel` processes spent per connection meanwhile (µs). */
async function connsWithCpu(
  lab: Lab,
  host: string,
  port: number,
  n: number,
  tunnel: number[],
): Promise<{ perSec: number; lat: number[]; cpuUsPerConn: number }> {
  const { r, cpu } = await withCpu(tunnel, () => conns(lab, host, port, n, CONNS_PARALLEL));
  return { ...r, cpuUsPerConn: (cpu.all * 1000) / n };
}

const pct = (sorted: number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];

/** pgbench's tps, and the CPU `tunnel` processes spent per transaction meanwhile (µs). */
async function pgbenchWithCpu(
  lab: Lab,
  pg: { pgbench: string; connArgs: string[] },
  seconds: number,
  tunnel: number[],
): Promise<{ tps: number; tx: number; cpuUsPerTx: number }> {
  const { r, cpu } = await withCpu(tunnel, () => pgbenchTps(lab, pg, seconds));
  return { ...r, cpuUsPerTx: r.tx ? (cpu.all * 1000) / r.tx : 0 };
}

async function pgbenchTps(lab: Lab, pg: { pgbench: string; connArgs: string[] }, seconds: number): Promise<{ tps: number; tx: number }> {
  const out = await nsExec(lab.host('a').ns, pg.pgbench, [...pg.connArgs, '-S', '-c', '4', '-j', '2', '-T', String(seconds), 'postgres'], {
    timeoutMs: (seconds + 60) * 1000,
  });
  const m = /tps = ([\d.]+)/.exec(out);
  const tx = /number of transactions actually processed: (\d+)/.exec(out);
  if (!m || !tx) throw new Error(`pgbench printed no tps:\n${out}`);
  return { tps: Number(m[1]), tx: Number(tx[1]) };
}

/**
 * A wireguard-go tunnel between the two namespaces on 10.78.<subnet>.0/24 over the veth;
 * returns b's tunnel address (once `probePort` answers through it) and a stop function.
 */
async function startWireguard(lab: Lab, subnet: number, probePort: number): Promise<{ addr: string; pids: number[]; stop: () => void }> {
  const procs: ChildProcess[] = [];
  const stop = (): void => {
    for (const p of procs) p.kill('SIGKILL');
  };
  try {
    const hosts = ['a', 'b'] as const;
    const keys = new Map<string, { priv: string; pub: string }>();
    for (const h of hosts) {
      const priv = (await nsExec(lab.host(h).ns, 'wg', ['genkey'])).trim();
      const pub = (await nsExec(lab.host(h).ns, 'wg', ['pubkey'], { input: priv + '\n' })).trim();
      keys.set(h, { priv, pub });
    }
    const tunAddr = (h: string): string => `10.78.${subnet}.${h === 'a' ? 1 : 2}`;
    for (const h of hosts) {
      const ns = lab.host(h).ns;
      // wireguard-go's control socket (/var/run/wireguard/IF.sock) is not per namespace: one name per host and run.
      const dev = `wg${process.pid % 100000}${h}`;
      const other = h === 'a' ? 'b' : 'a';
      // -f: foreground, so the bench owns the process (and kills it by its pid).
      const p = spawn('ip', ['netns', 'exec', ns, 'wireguard-go', '-f', dev], { stdio: 'ignore' });
      procs.push(p);
      // 30 s: on the shared 2-core machine (load 10+) 10 s was once not enough.
      await until(`wireguard-go's ${dev} in ${h}`, async () => (await nsRun(ns, 'wg', ['show', dev])).code === 0, 30_000, 100);
      const keyFile = join(lab.dir, `wg-${h}.key`);
      writeFileSync(keyFile, keys.get(h)!.priv + '\n', { mode: 0o600 });
      const endpoint = `${lab.host(other).addrs.get(h)}:${WG_PORT}`;
      await nsExec(ns, 'wg', [
        'set',
        dev,
        'private-key',
        keyFile,
        'listen-port',
        String(WG_PORT),
        'peer',
        keys.get(other)!.pub,
        'allowed-ips',
        `${tunAddr(other)}/32`,
        'endpoint',
        endpoint,
      ]);
      await nsExec(ns, 'ip', ['addr', 'add', `${tunAddr(h)}/24`, 'dev', dev]);
      await nsExec(ns, 'ip', ['link', 'set', dev, 'up']);
    }
    await until(
      'the WireGuard tunnel',
      async () =>
        (await nsRun(lab.host('a').ns, 'bash', ['-c', `exec 3<>/dev/tcp/${tunAddr('b')}/${probePort}`], { timeoutMs: 3000 })).code === 0,
      15_000,
      200,
    );
    return { addr: tunAddr('b'), pids: procs.map((p) => p.pid ?? -1), stop };
  } catch (e) {
    stop();
    throw e;
  }
}

export async function runWrapSpeedBench(o: WrapSpeedOptions): Promise<WrapSpeedResult> {
  const log = o.log ?? (() => {});
  const subnet = 64;
  const lab = new Lab(['a', 'b'], [{ a: 'a', b: 'b', subnet }], o.basePort);
  const stops: (() => Promise<void> | void)[] = [];
  try {
    const regs = [{ name: 'r', kind: 'map' }];
    lab.configure('a', regs, {
      logLevel: 'warn',
      fsync: 'never',
      wrap: {
        wrappers: [
          { protocol: 'tcp', port: SINK_WRAPPED, peer: 'b', hold: '30s' },
          { protocol: 'tcp', port: ECHO_WRAPPED, peer: 'b', hold: '30s' },
        ],
      },
    });
    const b = lab.host('b').addrs.get('a')!;
    lab.configure('b', regs, {
      logLevel: 'warn',
      fsync: 'never',
      wrap: {
        allow: [
          { peer: 'a', to: `${b}:${SINK_WRAPPED}` },
          { peer: 'a', to: `${b}:${ECHO_WRAPPED}` },
          { peer: 'a', to: `${b}:${PG_PORT}` },
        ],
      },
    });
    await lab.start('a');
    await lab.start('b');
    const servers = spawn(
      'ip',
      [
        'netns',
        'exec',
        lab.host('b').ns,
        process.execPath,
        '--input-type=module',
        '-e',
        SERVERS,
        `${SINK_DIRECT},${SINK_WRAPPED}`,
        `${ECHO_DIRECT},${ECHO_WRAPPED}`,
      ],
      { stdio: 'ignore' },
    );
    stops.push(() => void servers.kill('SIGKILL'));
    await until('the carrier', async () => ((await lab.admin('a', 'wrap-stats')).peers[0]?.carrier === 'up' ? true : undefined));
    await until(
      'the servers',
      async () => (await nsRun(lab.host('a').ns, 'bash', ['-c', `exec 3<>/dev/tcp/${b}/${ECHO_DIRECT}`])).code === 0,
    );

    log('bulk: direct');
    const directMBps = await bulk(lab, b, SINK_DIRECT, o.bytes);
    log('bulk: wrapped');
    const spookds = ['a', 'b'].map((h) => lab.host(h).proc?.pid ?? -1);
    const wrapped = await bulkWithCpu(lab, b, SINK_WRAPPED, o.bytes, spookds);
    const wrapMBps = wrapped.mbps;
    log('bulk: ssh -L');
    const sshd = await startSshd(lab.host('b').ns, b, SSH_PORT, join(lab.dir, 'sshd'));
    stops.push(() => sshd.stop());
    const fwd = await startSshForward(lab, sshd, FORWARD_PORT, b, SINK_DIRECT);
    stops.push(() => void fwd.kill('SIGKILL'));
    const viaSsh = await bulkWithCpu(lab, '127.0.0.1', FORWARD_PORT, o.bytes, [fwd.pid ?? -1, sshd.pid]);
    const sshForwardMBps = viaSsh.mbps;
    fwd.kill('SIGKILL');
    let wireguardMBps = 0;
    let wireguardCpuMsPerGiB = 0;
    let wireguardSysMsPerGiB = 0;
    // Kept up to the end: postgres listens on its address too.
    const wg = o.wireguard !== false ? await startWireguard(lab, subnet, SINK_DIRECT) : undefined;
    if (wg) {
      stops.push(wg.stop);
      log('bulk: wireguard-go');
      const viaWg = await bulkWithCpu(lab, wg.addr, SINK_DIRECT, o.bytes, wg.pids);
      wireguardMBps = viaWg.mbps;
      wireguardCpuMsPerGiB = viaWg.cpuMsPerGiB;
      wireguardSysMsPerGiB = viaWg.sysMsPerGiB;
    }
    const fwdEcho = await startSshForward(lab, sshd, FORWARD_ECHO, b, ECHO_DIRECT);
    stops.push(() => void fwdEcho.kill('SIGKILL'));
    const fwdPg = await startSshForward(lab, sshd, FORWARD_PG, b, PG_PORT);
    stops.push(() => void fwdPg.kill('SIGKILL'));
    const floor = await startRelayFloor(lab, b, [
      { ...FLOOR_ECHO, target: ECHO_DIRECT },
      { ...FLOOR_PG, target: PG_PORT },
    ]);
    stops.push(floor.stop);

    log('connections: direct');
    const directConns = await conns(lab, b, ECHO_DIRECT, o.connections, CONNS_PARALLEL);
    log('connections: wrapped');
    const wrapConns = await connsWithCpu(lab, b, ECHO_WRAPPED, o.connections, spookds);
    log('connections: ssh -L, wireguard-go, relay floor');
    const sshConns = await connsWithCpu(lab, '127.0.0.1', FORWARD_ECHO, o.connections, [fwdEcho.pid ?? -1, sshd.pid]);
    const wgConns = wg ? await connsWithCpu(lab, wg.addr, ECHO_DIRECT, o.connections, wg.pids) : undefined;
    const floorConns = await connsWithCpu(lab, '127.0.0.1', FLOOR_ECHO.local, o.connections, floor.pids);
    const directLat = (await conns(lab, b, ECHO_DIRECT, LATENCY_SAMPLES, 1)).lat;
    const wrapLat = (await conns(lab, b, ECHO_WRAPPED, LATENCY_SAMPLES, 1)).lat;

    let pgbenchDirectTps = 0;
    let pgbenchWrapTps = 0;
    let pgbenchSshTps = 0;
    let pgbenchWireguardTps = 0;
    let pgbenchFloorTps = 0;
    const cpuPerTx = { wrap: 0, ssh: 0, wg: 0, floor: 0 };
    let pgbenchRecordsPerTx = 0;
    if (o.pgbenchSeconds > 0) {
      log('pgbench');
      const pg = await startPostgres(lab.host('b').ns, b, PG_PORT, join(lab.dir, 'pg'), wg ? [wg.addr] : []);
      stops.push(() => pg.stop());
      await nsExec(lab.host('a').ns, pg.pgbench, [...pg.connArgs, '-i', '-s', '2', 'postgres'], { timeoutMs: 120_000 });
      pgbenchDirectTps = (await pgbenchTps(lab, pg, o.pgbenchSeconds)).tps;
      // The tunnels before the wrapper is added: once it is, every connection from a to PG_PORT is carried.
      const via = (host: string, port: number): { pgbench: string; connArgs: string[] } => ({
        pgbench: pg.pgbench,
        connArgs: ['-h', host, '-p', String(port), '-U', 'postgres'],
      });
      log('pgbench: ssh -L, wireguard-go, relay floor');
      const viaSshPg = await pgbenchWithCpu(lab, via('127.0.0.1', FORWARD_PG), o.pgbenchSeconds, [fwdPg.pid ?? -1, sshd.pid]);
      [pgbenchSshTps, cpuPerTx.ssh] = [viaSshPg.tps, viaSshPg.cpuUsPerTx];
      if (wg) {
        const viaWgPg = await pgbenchWithCpu(lab, via(wg.addr, PG_PORT), o.pgbenchSeconds, wg.pids);
        [pgbenchWireguardTps, cpuPerTx.wg] = [viaWgPg.tps, viaWgPg.cpuUsPerTx];
      }
      const viaFloor = await pgbenchWithCpu(lab, via('127.0.0.1', FLOOR_PG.local), o.pgbenchSeconds, floor.pids);
      [pgbenchFloorTps, cpuPerTx.floor] = [viaFloor.tps, viaFloor.cpuUsPerTx];
      log('pgbench: wrapped');
      await lab.admin('a', 'wrap-add', { protocol: 'postgres', port: PG_PORT, peer: 'b', hold: '30s' });
      const records = async (): Promise<number> => {
        const p = (await lab.admin('a', 'wrap-stats')).peers[0];
        return p.recordsIn + p.recordsOut;
      };
      const before = await records();
      const w = await pgbenchWithCpu(lab, pg, o.pgbenchSeconds, spookds);
      pgbenchWrapTps = w.tps;
      cpuPerTx.wrap = w.cpuUsPerTx;
      pgbenchRecordsPerTx = ((await records()) - before) / w.tx;
      const st = await lab.admin('a', 'wrap-stats');
      if (!st.protocols.postgres?.connections) throw new Error('pgbench through the wrapper was not intercepted');
    }
    const stats = (await lab.admin('a', 'wrap-stats')) as unknown as { peers: { carrierCipher?: string }[] };
    const r2 = (x: number): number => Number(x.toFixed(2));
    const r3 = (x: number): number => Number(x.toFixed(3));
    return {
      bytes: o.bytes,
      directMBps: r2(directMBps),
      wrapMBps: r2(wrapMBps),
      sshForwardMBps: r2(sshForwardMBps),
      wireguardMBps: r2(wireguardMBps),
      wrapVsSsh: r2(wrapMBps / sshForwardMBps),
      wrapVsWireguard: wireguardMBps ? r2(wrapMBps / wireguardMBps) : 0,
      wrapVsDirect: r2(wrapMBps / directMBps),
      wrapCpuMsPerGiB: Math.round(wrapped.cpuMsPerGiB),
      sshCpuMsPerGiB: Math.round(viaSsh.cpuMsPerGiB),
      wireguardCpuMsPerGiB: Math.round(wireguardCpuMsPerGiB),
      wrapSysMsPerGiB: Math.round(wrapped.sysMsPerGiB),
      sshSysMsPerGiB: Math.round(viaSsh.sysMsPerGiB),
      wireguardSysMsPerGiB: Math.round(wireguardSysMsPerGiB),
      connections: o.connections,
      connsParallel: CONNS_PARALLEL,
      directConnsPerSec: Math.round(directConns.perSec),
      wrapConnsPerSec: Math.round(wrapConns.perSec),
      wrapVsDirectConns: r2(wrapConns.perSec / directConns.perSec),
      sshConnsPerSec: Math.round(sshConns.perSec),
      wireguardConnsPerSec: Math.round(wgConns?.perSec ?? 0),
      floorConnsPerSec: Math.round(floorConns.perSec),
      sshCpuUsPerConn: Math.round(sshConns.cpuUsPerConn),
      wireguardCpuUsPerConn: Math.round(wgConns?.cpuUsPerConn ?? 0),
      floorCpuUsPerConn: Math.round(floorConns.cpuUsPerConn),
      wrapCpuUsPerConn: Math.round(wrapConns.cpuUsPerConn),
      directParallelP50Ms: r3(pct(directConns.lat, 0.5)),
      wrapParallelP50Ms: r3(pct(wrapConns.lat, 0.5)),
      latencySamples: LATENCY_SAMPLES,
      directNewConnP50Ms: r3(pct(directLat, 0.5)),
      wrapNewConnP50Ms: r3(pct(wrapLat, 0.5)),
      directNewConnP99Ms: r3(pct(directLat, 0.99)),
      wrapNewConnP99Ms: r3(pct(wrapLat, 0.99)),
      pgbenchSeconds: o.pgbenchSeconds,
      pgbenchDirectTps: r2(pgbenchDirectTps),
      pgbenchWrapTps: r2(pgbenchWrapTps),
      wrapVsDirectPgbench: pgbenchDirectTps ? r2(pgbenchWrapTps / pgbenchDirectTps) : 0,
      pgbenchSshTps: r2(pgbenchSshTps),
      pgbenchWireguardTps: r2(pgbenchWireguardTps),
      pgbenchFloorTps: r2(pgbenchFloorTps),
      pgbenchWrapCpuUsPerTx: Math.round(cpuPerTx.wrap),
      pgbenchSshCpuUsPerTx: Math.round(cpuPerTx.ssh),
      pgbenchWireguardCpuUsPerTx: Math.round(cpuPerTx.wg),
      pgbenchFloorCpuUsPerTx: Math.round(cpuPerTx.floor),
      pgbenchRecordsPerTx: r2(pgbenchRecordsPerTx),
      carrierCipher: stats.peers[0]?.carrierCipher ?? 'chacha20-poly1305',
    };
  } finally {
    for (const s of stops.reverse()) await s();
    for (const h of ['a', 'b']) await lab.stop(h).catch(() => undefined);
    await sleep(100);
    await lab.destroy();
  }
}

/** Lines for the terminal: each figure beside its same-run baseline and the goal. */
export function formatWrapSpeed(r: WrapSpeedResult): string[] {
  const ofDirect = (x: number, direct: number): string => (x && direct ? (x / direct).toFixed(2) : 'not measured');
  const goal = (ok: boolean): string => (ok ? 'met' : 'MISSED');
  return [
    `bulk ${(r.bytes / 2 ** 20).toFixed(0)} MiB  direct ${r.directMBps} MB/s  wrapped ${r.wrapMBps}  ssh -L ${r.sshForwardMBps}  wireguard-go ${r.wireguardMBps}  (carrier ${r.carrierCipher})`,
    `  wrapped/ssh -L ${r.wrapVsSsh} (goal > 1: ${goal(r.wrapVsSsh > 1)})  wrapped/wireguard-go ${r.wrapVsWireguard} (goal > 1: ${goal(r.wrapVsWireguard > 1)})  wrapped/direct ${r.wrapVsDirect}`,
    `  CPU of the tunnel's processes per GiB (of it in the kernel): wrapped (both spookd) ${r.wrapCpuMsPerGiB} ms (${r.wrapSysMsPerGiB})  ssh -L (ssh, sshd) ${r.sshCpuMsPerGiB} ms (${r.sshSysMsPerGiB})  wireguard-go (both) ${r.wireguardCpuMsPerGiB} ms (${r.wireguardSysMsPerGiB})`,
    `new connections/s (${r.connections}, ${r.connsParallel} in flight)  direct ${r.directConnsPerSec}  wrapped ${r.wrapConnsPerSec}  ratio ${r.wrapVsDirectConns} (goal >= 0.5: ${goal(r.wrapVsDirectConns >= 0.5)})  p50 direct ${r.directParallelP50Ms} ms wrapped ${r.wrapParallelP50Ms} ms; both spookd ${r.wrapCpuUsPerConn} µs CPU per connection`,
    `  of direct: ssh -L ${ofDirect(r.sshConnsPerSec, r.directConnsPerSec)} (${r.sshCpuUsPerConn} µs CPU per connection)  wireguard-go ${ofDirect(r.wireguardConnsPerSec, r.directConnsPerSec)} (${r.wireguardCpuUsPerConn} µs)  two plain C relays ${ofDirect(r.floorConnsPerSec, r.directConnsPerSec)} (${r.floorCpuUsPerConn} µs)`,
    `one request on a new connection (${r.latencySamples}, one at a time)  p50 direct ${r.directNewConnP50Ms} ms wrapped ${r.wrapNewConnP50Ms} ms  p99 direct ${r.directNewConnP99Ms} wrapped ${r.wrapNewConnP99Ms}`,
    `pgbench -S ${r.pgbenchSeconds} s  direct ${r.pgbenchDirectTps} tps  wrapped ${r.pgbenchWrapTps}  ratio ${r.wrapVsDirectPgbench} (goal >= 0.5: ${goal(r.wrapVsDirectPgbench >= 0.5)})  carrier records per transaction ${r.pgbenchRecordsPerTx}`,
    `  of direct: ssh -L ${ofDirect(r.pgbenchSshTps, r.pgbenchDirectTps)}  wireguard-go ${ofDirect(r.pgbenchWireguardTps, r.pgbenchDirectTps)}  two plain C relays ${ofDirect(r.pgbenchFloorTps, r.pgbenchDirectTps)}`,
    `  CPU of the tunnel's processes per transaction: wrapped (both spookd) ${r.pgbenchWrapCpuUsPerTx} µs  ssh -L ${r.pgbenchSshCpuUsPerTx}  wireguard-go ${r.pgbenchWireguardCpuUsPerTx}  plain relays ${r.pgbenchFloorCpuUsPerTx}`,
  ];
}
