/**
 * CPU per request on an open wrapped connection, without root (issue 17, speed): two
 * WrapManagers in this process joined by a loopback carrier (bench/wrap-inproc.ts), an echo
 * server and a client in child processes; the client keeps `inFlight` connections open and
 * sends 64-byte requests, each answered before the next on its connection (pgbench -S's shape:
 * four relay hops per request). Each round runs direct, wrapped and through two plain Node
 * relays in this process (the same-run baseline: what two Node relays cost with no carrier and
 * no encryption), and prints the rates and this process's CPU µs per request for both.
 *
 *   node dist/bench/wrap-rrcpu.js [requests=20000] [rounds=3] [inFlight=4] [idle=0] [others=0]
 *   (inFlight 1: every hop wakes the event loop, as each spookd of a lab does; idle: that many
 *   more connections held open through the wrapper and through the relays, carrying nothing;
 *   others: that many more peers configured on both managers, never connected, as on a hub:
 *   to show what a request costs beside them)
 */
import { spawn } from 'node:child_process';
import { startEchoServer, startInprocWrap, startNodeRelays } from './wrap-inproc.js';

/** `conns` connections, each a loop of a 64-byte request and its echo, until n requests in all. */
const CLIENT = `
import { connect } from 'node:net';
const [port, n, conns] = [Number(process.argv[1]), Number(process.argv[2]), Number(process.argv[3])];
const req = Buffer.alloc(64, 1);
let done = 0;
let t0 = 0, open = 0;
setTimeout(() => { console.error('requests timed out'); process.exit(1); }, 120000).unref();
for (let i = 0; i < conns; i++) {
  const s = connect({ host: '127.0.0.1', port, noDelay: true });
  let got = 0;
  s.on('connect', () => { if (++open === conns) { t0 = performance.now(); } s.write(req); });
  s.on('data', (d) => {
    got += d.length;
    while (got >= 64) {
      got -= 64;
      if (++done === n) { console.log(JSON.stringify({ ms: performance.now() - t0 })); process.exit(0); }
      s.write(req);
    }
  });
  s.on('error', (e) => { console.error(e.message); process.exit(1); });
}
`;

/** `k` connections that open and then carry nothing; prints OPEN once all are up. */
const IDLE = `
import { connect } from 'node:net';
const [port, k] = [Number(process.argv[1]), Number(process.argv[2])];
let open = 0;
for (let i = 0; i < k; i++) {
  const s = connect({ host: '127.0.0.1', port });
  s.on('connect', () => { if (++open === k) console.log('OPEN'); });
  s.on('error', (e) => { console.error(e.message); process.exit(1); });
}
setInterval(() => {}, 1000);
`;

/** Hold `k` idle connections to `port` open (a child process) until the returned kill(). */
async function holdIdle(port: number, k: number): Promise<() => void> {
  if (k === 0) return () => {};
  const p = spawn(process.execPath, ['--input-type=module', '-e', IDLE, String(port), String(k)], { stdio: ['ignore', 'pipe', 'inherit'] });
  await new Promise<void>((resolve, reject) => {
    p.stdout.on('data', (d) => String(d).includes('OPEN') && resolve());
    p.on('exit', (code) => reject(new Error(`idle connections exited ${code}`)));
  });
  return () => p.kill();
}

function runClient(port: number, n: number, conns: number): Promise<{ ms: number }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--input-type=module', '-e', CLIENT, String(port), String(n), String(conns)]);
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => process.stderr.write(d));
    p.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as { ms: number }) : reject(new Error(`client exit ${code}`))));
  });
}

async function main(): Promise<void> {
  const n = Number(process.argv[2] ?? 20000);
  const rounds = Number(process.argv[3] ?? 3);
  const inFlight = Number(process.argv[4] ?? 4);
  const idle = Number(process.argv[5] ?? 0);
  const others = Number(process.argv[6] ?? 0);
  const echo = await startEchoServer();
  const echoPort = echo.port;
  const wrap = await startInprocWrap(echoPort, 1 << 20, others);
  const relays = await startNodeRelays(echoPort);
  const unhold = [await holdIdle(wrap.interceptPort, idle), await holdIdle(relays.port, idle)];
  await runClient(wrap.interceptPort, 2000, inFlight); // warm-up: the carrier, JIT
  await runClient(relays.port, 2000, inFlight);
  for (let r = 0; r < rounds; r++) {
    const d = await runClient(echoPort, n, inFlight);
    const c0 = process.cpuUsage();
    const w = await runClient(wrap.interceptPort, n, inFlight);
    const c = process.cpuUsage(c0);
    await new Promise((res) => setTimeout(res, 200)); // the wrapped connections' closes, outside both windows
    const c1 = process.cpuUsage();
    const rl = await runClient(relays.port, n, inFlight);
    const cr = process.cpuUsage(c1);
    console.log(
      JSON.stringify({
        round: r,
        idle,
        others,
        directPerSec: Math.round((n * 1000) / d.ms),
        wrapPerSec: Math.round((n * 1000) / w.ms),
        ratio: +(d.ms / w.ms).toFixed(3),
        cpuUsPerRequest: +((c.user + c.system) / n).toFixed(1),
        sysUsPerRequest: +(c.system / n).toFixed(1),
        nodeRelaysPerSec: Math.round((n * 1000) / rl.ms),
        nodeRelaysCpuUsPerRequest: +((cr.user + cr.system) / n).toFixed(1),
      }),
    );
  }
  for (const kill of unhold) kill();
  await wrap.stop();
  await relays.stop();
  echo.kill();
}

await main();
// Exit now: once, after the managers had stopped, Node's own exit cleanup (uv_run in
// Environment::CleanupHandles) spun at 100% CPU for minutes; spookd always ends by process.exit.
process.exit(0);
