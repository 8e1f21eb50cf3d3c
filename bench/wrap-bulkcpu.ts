/**
 * CPU per GiB of a wrapped bulk transfer without root (issue 17, bulk CPU per byte): two
 * WrapManagers in this process joined by a loopback carrier, a stand-in interceptor (no BPF:
 * the original destination is the sink), the sink and the bulk client (bench/wrap.ts's) in
 * child processes, so this process's CPU time is the two managers' alone. Each round prints
 * MB/s and the managers' CPU ms per GiB (user, system).
 *
 *   node dist/bench/wrap-bulkcpu.js [bytes=268435456] [rounds=3]
 *   (node --cpu-prof ... to see where a byte's time goes)
 */
import { spawn } from 'node:child_process';
import { startInprocWrap } from './wrap-inproc.js';
import { BULK_CLIENT } from './wrap.js';

const SINK = `
import { createServer } from 'node:net';
const srv = createServer({ allowHalfOpen: true }, (s) => {
  let n = 0;
  s.on('data', (d) => (n += d.length));
  s.on('end', () => s.end(String(n)));
  s.on('error', () => {});
});
srv.listen(0, '127.0.0.1', () => console.log(srv.address().port));
`;

function runClient(port: number, bytes: number): Promise<{ ms: number; count: number }> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--input-type=module', '-e', BULK_CLIENT, '127.0.0.1', String(port), String(bytes)]);
    let out = '';
    p.stdout.on('data', (d) => (out += d));
    p.stderr.on('data', (d) => process.stderr.write(d));
    p.on('exit', (code) =>
      code === 0 ? resolve(JSON.parse(out) as { ms: number; count: number }) : reject(new Error(`client exit ${code}`)),
    );
  });
}

async function main(): Promise<void> {
  const bytes = Number(process.argv[2] ?? 2 ** 28);
  const rounds = Number(process.argv[3] ?? 3);
  const sink = spawn(process.execPath, ['--input-type=module', '-e', SINK]);
  const sinkPort = await new Promise<number>((r) => sink.stdout.once('data', (d) => r(Number(String(d).trim()))));
  const wrap = await startInprocWrap(sinkPort, 4 << 20);
  const interceptPort = wrap.interceptPort;
  await runClient(interceptPort, 32 << 20); // warm-up: the carrier, JIT
  for (let r = 0; r < rounds; r++) {
    const c0 = process.cpuUsage();
    const w = await runClient(interceptPort, bytes);
    const c = process.cpuUsage(c0);
    if (w.count !== bytes) throw new Error(`the sink counted ${w.count} of ${bytes}`);
    const perGiB = (us: number): number => Math.round((us / 1000) * (2 ** 30 / bytes));
    console.log(
      JSON.stringify({
        round: r,
        MBps: +(bytes / 1e6 / (w.ms / 1000)).toFixed(1),
        cpuMsPerGiB: perGiB(c.user + c.system),
        userMsPerGiB: perGiB(c.user),
        sysMsPerGiB: perGiB(c.system),
      }),
    );
  }
  await wrap.stop();
  sink.kill();
}

await main();
// Exit now: once, after the managers had stopped, Node's own exit cleanup (uv_run in
// Environment::CleanupHandles) spun at 100% CPU for minutes; spookd always ends by process.exit.
process.exit(0);
