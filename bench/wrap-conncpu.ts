/**
 * CPU per wrapped connection without root (issue 17, speed): two WrapManagers in this process
 * joined by a loopback carrier, a stand-in interceptor (no BPF: the original destination is
 * the echo server), the echo server and the connection client (bench/wrap-speed.ts's) in child
 * processes, so this process's CPU time is the two managers' alone. Each round runs direct,
 * wrapped and through two plain Node relays in this process (the same-run baseline), and prints
 * the rates and the CPU µs per connection of the managers and of the relays.
 *
 *   node dist/bench/wrap-conncpu.js [connections=2000] [rounds=3] [inFlight=8]
 *   (node --cpu-prof ... to see where a connection's time goes; inFlight 1 and `strace -c -p PID`
 *   count the managers' system calls per connection, with no batching across connections)
 */
import { spawn } from 'node:child_process';
import { startEchoServer, startInprocWrap, startNodeRelays } from './wrap-inproc.js';
import { CONN_CLIENT } from './wrap-speed.js';

function runClient(port: number, n: number, parallel: number): Promise<{ ms: number; lat: number[] }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--input-type=module', '-e', CONN_CLIENT, '127.0.0.1', String(port), String(n), String(parallel)]);
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => process.stderr.write(d));
    p.on('exit', (code) =>
      code === 0 ? resolve(JSON.parse(out) as { ms: number; lat: number[] }) : reject(new Error(`client exit ${code}`)),
    );
  });
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1] ?? 0;

async function main(): Promise<void> {
  const n = Number(process.argv[2] ?? 2000);
  const rounds = Number(process.argv[3] ?? 3);
  const parallel = Number(process.argv[4] ?? 8);
  const echo = await startEchoServer();
  const echoPort = echo.port;
  const wrap = await startInprocWrap(echoPort, 1 << 20);
  const relays = await startNodeRelays(echoPort);
  const interceptPort = wrap.interceptPort;
  await runClient(interceptPort, 50, 8); // warm-up: the carrier, JIT
  await runClient(relays.port, 50, 8);
  for (let r = 0; r < rounds; r++) {
    const d = await runClient(echoPort, n, parallel);
    const c0 = process.cpuUsage();
    const w = await runClient(interceptPort, n, parallel);
    await new Promise((res) => setTimeout(res, 200)); // the last closes
    const c = process.cpuUsage(c0);
    const c1 = process.cpuUsage();
    const rl = await runClient(relays.port, n, parallel);
    await new Promise((res) => setTimeout(res, 200));
    const cr = process.cpuUsage(c1);
    const direct = (n * 1000) / d.ms;
    const wrapped = (n * 1000) / w.ms;
    console.log(
      JSON.stringify({
        round: r,
        directPerSec: Math.round(direct),
        wrapPerSec: Math.round(wrapped),
        ratio: +(wrapped / direct).toFixed(3),
        cpuUsPerConn: Math.round((c.user + c.system) / n),
        // Connect to echo, median (with 1 in flight: one request on a new connection).
        directP50Ms: +median(d.lat).toFixed(3),
        wrapP50Ms: +median(w.lat).toFixed(3),
        sysUsPerConn: Math.round(c.system / n),
        // The same loop through two plain Node relays in this process (no carrier, no encryption).
        nodeRelaysPerSec: Math.round((n * 1000) / rl.ms),
        nodeRelaysCpuUsPerConn: Math.round((cr.user + cr.system) / n),
      }),
    );
  }
  await wrap.stop();
  await relays.stop();
  echo.kill();
}

await main();
// Exit now: once, after the managers had stopped, Node's own exit cleanup (uv_run in
// Environment::CleanupHandles) spun at 100% CPU for minutes; spookd always ends by process.exit.
process.exit(0);
