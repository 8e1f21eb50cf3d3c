/**
 * `spook-lab bench wrap`: two hosts in network namespaces joined by a veth, a spookd on each,
 * the client on host a and the servers on host b (needs root).
 *
 *  directMBps     bytes/s of one TCP connection a → b (a Node sink on b), no wrapper;
 *  wrapMBps       the same transfer to a wrapped port: intercepted on a, carried over the
 *                 pair's carrier, dialled by b's spookd;
 *  sshForwardMBps the same transfer through `ssh -L` (OpenSSH, default cipher) to the same sink;
 *  pgbench        tps of `pgbench -S` (select-only, 4 clients) direct and through the wrapper;
 *  delta mode     an HTTP client polls a 1 MiB resource on nginx (curl, one keep-alive
 *                 connection per batch of 10 polls; 64 bytes of the resource change before
 *                 every batch): carrier bytes with a plain wrapper vs a delta-mode one.
 * All measured in the same run, one after the other, on the same machines.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { Lab, sleep, until } from '../testing/lab/netns.js';
import { writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { nsExec, nsRun, startNginx, startPostgres, startSshd, type SshdServer } from '../testing/lab/servers.js';
import type { WrapStatsResult } from '../client/protocol.js';

export interface WrapBenchResult {
  bytes: number;
  directMBps: number;
  wrapMBps: number;
  sshForwardMBps: number;
  wrapVsSsh: number;
  wrapVsDirect: number;
  pgbenchSeconds: number;
  pgbenchDirectTps: number;
  pgbenchWrapTps: number;
  httpPolls: number;
  httpAppBytes: number;
  httpPlainCarrierBytes: number;
  httpDeltaCarrierBytes: number;
  deltaSavedFraction: number;
}

const SINK_DIRECT = 9100;
const SINK_WRAPPED = 9101;
const PG_PORT = 5432;
const SSH_PORT = 2222;
const FORWARD_PORT = 9200;
const HTTP_PORT = 8080;
const POLL_BATCHES = 5;
const POLLS_PER_BATCH = 10;

/** Poll the resource in batches (one keep-alive connection each), editing it between batches; returns carrier and app bytes. */
async function poll(lab: Lab, url: string, file: string, body: Buffer): Promise<{ carrier: number; app: number }> {
  const before = await lab.admin('a', 'wrap-stats');
  for (let b = 0; b < POLL_BATCHES; b++) {
    randomBytes(64).copy(body, (b * 200_003) % (body.length - 64)); // the resource changes a little
    writeFileSync(file, body);
    await nsExec(
      lab.host('a').ns,
      'curl',
      ['-sS', '-f', ...Array.from({ length: POLLS_PER_BATCH }, () => ['-o', '/dev/null', url]).flat()],
      { timeoutMs: 60_000 },
    );
  }
  await sleep(200);
  const after = await lab.admin('a', 'wrap-stats');
  const down = (s: WrapStatsResult): number => s.wrappers.find((w) => w.port === HTTP_PORT)?.bytesDown ?? 0;
  return { carrier: after.peers[0].carrierBytesIn - before.peers[0].carrierBytesIn, app: down(after) - down(before) };
}

/** A sink that counts what each connection sends and answers with the count at its end. */
const SINK = `
import { createServer } from 'node:net';
// node -e: argv[1] is the first argument
for (const port of process.argv.slice(1, -1)) {
  createServer({ allowHalfOpen: true }, (s) => {
    let n = 0;
    s.on('data', (d) => (n += d.length));
    s.on('end', () => s.end(String(n)));
    s.on('error', () => {});
  }).listen(Number(port), process.argv.at(-1));
}
`;

/** Send `bytes` to host:port, half-close, wait for the sink's count; prints ms and the count. */
export const BULK_CLIENT = `
import { connect } from 'node:net';
const [host, port, bytes] = [process.argv[1], Number(process.argv[2]), Number(process.argv[3])];
const buf = Buffer.alloc(1 << 20, 7);
const t0 = performance.now();
const s = connect({ host, port, allowHalfOpen: true });
let sent = 0, reply = '';
const pump = () => {
  while (sent < bytes) {
    const n = Math.min(buf.length, bytes - sent);
    sent += n;
    if (!s.write(n === buf.length ? buf : buf.subarray(0, n))) return void s.once('drain', pump);
  }
  s.end();
};
s.on('connect', pump);
s.on('data', (d) => (reply += d));
s.on('error', (e) => { console.error(e.message); process.exit(1); });
s.on('close', () => { console.log(JSON.stringify({ ms: performance.now() - t0, count: Number(reply) })); });
`;

/** `ssh -L 127.0.0.1:listenPort:to:toPort` from host a's namespace through `sshd`, once it accepts (the baseline tunnel). */
export async function startSshForward(lab: Lab, sshd: SshdServer, listenPort: number, to: string, toPort: number): Promise<ChildProcess> {
  const fwd = spawn(
    'ip',
    ['netns', 'exec', lab.host('a').ns, 'ssh', ...sshd.sshArgs, '-N', '-L', `127.0.0.1:${listenPort}:${to}:${toPort}`, to],
    {
      stdio: 'ignore',
    },
  );
  try {
    await until(
      'ssh -L',
      async () =>
        (await nsRun(lab.host('a').ns, 'bash', ['-c', `exec 3<>/dev/tcp/127.0.0.1/${listenPort}`], { timeoutMs: 2000 })).code === 0,
      15_000,
      200,
    );
  } catch (e) {
    fwd.kill('SIGKILL');
    throw e;
  }
  return fwd;
}

async function throughput(lab: Lab, host: string, port: number, bytes: number): Promise<number> {
  const out = await nsExec(
    lab.host('a').ns,
    process.execPath,
    ['--input-type=module', '-e', BULK_CLIENT, host, String(port), String(bytes)],
    {
      timeoutMs: 600_000,
    },
  );
  const r = JSON.parse(out) as { ms: number; count: number };
  if (r.count !== bytes) throw new Error(`the sink counted ${r.count} bytes of ${bytes} (${host}:${port})`);
  return bytes / 1e6 / (r.ms / 1000);
}

async function pgbenchTps(lab: Lab, pg: { pgbench: string; connArgs: string[] }, seconds: number): Promise<number> {
  const out = await nsExec(lab.host('a').ns, pg.pgbench, [...pg.connArgs, '-S', '-c', '4', '-j', '2', '-T', String(seconds), 'postgres'], {
    timeoutMs: (seconds + 60) * 1000,
  });
  const m = /tps = ([\d.]+)/.exec(out);
  if (!m) throw new Error(`pgbench printed no tps:\n${out}`);
  return Number(m[1]);
}

export async function runWrapBench(o: { bytes: number; pgbenchSeconds: number; basePort: number }): Promise<WrapBenchResult> {
  const lab = new Lab(['a', 'b'], [{ a: 'a', b: 'b', subnet: 62 }], o.basePort);
  const stops: (() => Promise<void> | void)[] = [];
  try {
    const regs = [{ name: 'r', kind: 'map' }];
    lab.configure('a', regs, {
      logLevel: 'warn',
      fsync: 'never',
      wrap: { wrappers: [{ protocol: 'tcp', port: SINK_WRAPPED, peer: 'b', hold: '30s' }] },
    });
    const b = lab.host('b').addrs.get('a')!;
    // The serving side dials only what its policy allows (default deny).
    lab.configure('b', regs, {
      logLevel: 'warn',
      fsync: 'never',
      wrap: { allow: [SINK_WRAPPED, PG_PORT, HTTP_PORT].map((port) => ({ peer: 'a', to: `${b}:${port}` })) },
    });
    await lab.start('a');
    await lab.start('b');
    const sink = spawn(
      'ip',
      [
        'netns',
        'exec',
        lab.host('b').ns,
        process.execPath,
        '--input-type=module',
        '-e',
        SINK,
        String(SINK_DIRECT),
        String(SINK_WRAPPED),
        b,
      ],
      { stdio: 'ignore' },
    );
    stops.push(() => void sink.kill('SIGKILL'));
    const sshd = await startSshd(lab.host('b').ns, b, SSH_PORT, join(lab.dir, 'sshd'));
    stops.push(() => sshd.stop());
    await until('the carrier', async () => ((await lab.admin('a', 'wrap-stats')).peers[0].carrier === 'up' ? true : undefined));

    const directMBps = await throughput(lab, b, SINK_DIRECT, o.bytes);
    const wrapMBps = await throughput(lab, b, SINK_WRAPPED, o.bytes);
    const fwd = await startSshForward(lab, sshd, FORWARD_PORT, b, SINK_DIRECT);
    stops.push(() => void fwd.kill('SIGKILL'));
    const sshForwardMBps = await throughput(lab, '127.0.0.1', FORWARD_PORT, o.bytes);

    let pgbenchDirectTps = 0;
    let pgbenchWrapTps = 0;
    if (o.pgbenchSeconds > 0) {
      const pg = await startPostgres(lab.host('b').ns, b, PG_PORT, join(lab.dir, 'pg'));
      stops.push(() => pg.stop());
      await nsExec(lab.host('a').ns, pg.pgbench, [...pg.connArgs, '-i', '-s', '2', 'postgres'], { timeoutMs: 120_000 });
      pgbenchDirectTps = await pgbenchTps(lab, pg, o.pgbenchSeconds);
      await lab.admin('a', 'wrap-add', { protocol: 'postgres', port: PG_PORT, peer: 'b', hold: '30s' });
      pgbenchWrapTps = await pgbenchTps(lab, pg, o.pgbenchSeconds);
      const st = await lab.admin('a', 'wrap-stats');
      if (!st.protocols.postgres?.connections) throw new Error('pgbench through the wrapper was not intercepted');
    }
    // Delta mode on HTTP polling: the same workload through a plain wrapper, then a delta one.
    const nginx = await startNginx(lab.host('b').ns, b, HTTP_PORT, join(lab.dir, 'nginx'));
    stops.push(() => nginx.stop());
    const file = join(nginx.docroot, 'resource.bin');
    const body = randomBytes(1 << 20);
    const url = `${nginx.baseUrl}/resource.bin`;
    await lab.admin('a', 'wrap-add', { protocol: 'http', port: HTTP_PORT, peer: 'b', hold: '30s' });
    const plain = await poll(lab, url, file, body);
    await lab.admin('a', 'wrap-remove', { port: HTTP_PORT });
    await lab.admin('a', 'wrap-add', { protocol: 'http', port: HTTP_PORT, peer: 'b', hold: '30s', delta: true });
    const delta = await poll(lab, url, file, body);
    const r2 = (x: number): number => Number(x.toFixed(2));
    return {
      bytes: o.bytes,
      directMBps: r2(directMBps),
      wrapMBps: r2(wrapMBps),
      sshForwardMBps: r2(sshForwardMBps),
      wrapVsSsh: r2(wrapMBps / sshForwardMBps),
      wrapVsDirect: r2(wrapMBps / directMBps),
      pgbenchSeconds: o.pgbenchSeconds,
      pgbenchDirectTps: r2(pgbenchDirectTps),
      pgbenchWrapTps: r2(pgbenchWrapTps),
      httpPolls: POLL_BATCHES * POLLS_PER_BATCH,
      httpAppBytes: delta.app,
      httpPlainCarrierBytes: plain.carrier,
      httpDeltaCarrierBytes: delta.carrier,
      deltaSavedFraction: Number((1 - delta.carrier / plain.carrier).toFixed(3)),
    };
  } finally {
    for (const s of stops.reverse()) await s();
    for (const h of ['a', 'b']) await lab.stop(h).catch(() => undefined); // graceful: profiles and logs are written
    await sleep(100);
    await lab.destroy();
  }
}
