/**
 * `spook-lab bench wrap --only restart` (issue 17, beyond every anchor): a restart of either
 * spookd under a live ssh session and a counter stream, both wrapped, between two namespaces.
 *
 * Each spookd runs under the lab's service manager (testing/lab/fdstore.ts: NOTIFY_SOCKET, a
 * descriptor store, LISTEN_FDS at the next start: what `systemctl restart` does). Rounds alternate
 * the client-side and the server-side spookd; per restart: how long the stop took (the handover),
 * until the new process served (admin socket), and the longest silence the ssh session and the
 * stream saw. At the end: whether every ssh line and every stream byte arrived in order on the
 * first connection. Baseline from the same run: a plain restart (no service manager, as before
 * this issue) of the client-side spookd under a new session and stream: both reset.
 */
import { join } from 'node:path';
import { Lab, sleep, until } from '../testing/lab/netns.js';
import { CutStreams } from '../testing/lab/cutstream.js';
import { startSshd } from '../testing/lab/servers.js';
import { LabServiceManager } from '../testing/lab/fdstore.js';
import { SshTicker } from '../testing/lab/sshticker.js';

export interface RestartRound {
  side: 'client' | 'server';
  /** SIGTERM to exit (the handover included). */
  stopMs: number;
  /** SIGTERM to the new process serving. */
  downMs: number;
  /** Connections the stopping spookd handed over. */
  handedOver: number;
  /** Longest silence of the ssh session (a line every 50 ms) and of the stream around this restart. */
  sshGapMs: number;
  streamGapMs: number;
}

export interface RestartBenchResult {
  rounds: RestartRound[];
  /** Every line in order, then the session's own end (exit 0). */
  sshLines: number;
  sshIntact: boolean;
  streamBytes: number;
  /** Every byte in order, all the server sent, ended by the server's FIN (not a reset). */
  streamIntact: boolean;
  /** Baseline, same run: a plain restart (no descriptor store). */
  plainSshReset: boolean;
  plainStreamReset: boolean;
}

const STREAM = 9301;
const STREAM_PLAIN = 9302;
const SSH = 9322;

export async function runRestartBench(o: { basePort: number; rounds?: number }): Promise<RestartBenchResult> {
  const rounds = o.rounds ?? 4;
  const lab = new Lab(['ra', 'rb'], [{ a: 'ra', b: 'rb', subnet: 67 }], o.basePort);
  const mgr = { ra: new LabServiceManager(), rb: new LabServiceManager() };
  const stops: (() => Promise<void> | void)[] = [];
  try {
    const addr = lab.host('rb').addrs.get('ra')!;
    const regs = [{ name: 'r', kind: 'map' }];
    const ports = [STREAM, STREAM_PLAIN, SSH];
    lab.configure('ra', regs, { logLevel: 'info', wrap: { wrappers: ports.map((port) => ({ protocol: 'tcp', port, peer: 'rb' })) } });
    lab.configure('rb', regs, { logLevel: 'info', wrap: { allow: ports.map((p) => ({ peer: 'ra', to: `${addr}:${p}` })) } });
    await lab.start('ra', { env: mgr.ra.env() });
    await lab.start('rb', { env: mgr.rb.env() });
    await until('the carrier', async () => (await lab.admin('ra', 'wrap-stats')).peers[0].carrier === 'up' || undefined, 20_000);
    const sshd = await startSshd(lab.host('rb').ns, addr, SSH, join(lab.dir, 'sshd'));
    stops.push(() => sshd.stop());

    const streams = new CutStreams(lab.host('rb').ns, lab.host('ra').ns, addr, [STREAM], { gapMs: 50 }); // every silence from 50 ms
    stops.push(() => streams.close());
    await streams.start();
    const ssh = new SshTicker(lab.host('ra').ns, addr, sshd, join(lab.dir, 'stop-ticker'));
    stops.push(() => ssh.kill());
    if (!(await ssh.more(20))) throw new Error(`no ssh output: ${ssh.stderr}`);

    const marks: { side: 'client' | 'server'; at: number; r: Awaited<ReturnType<LabServiceManager['restart']>> }[] = [];
    for (let i = 0; i < rounds; i++) {
      const side = i % 2 === 0 ? 'client' : 'server';
      const host = side === 'client' ? 'ra' : 'rb';
      const at = Date.now();
      const r = await mgr[host].restart(lab, host);
      marks.push({ side, at, r });
      if (!(await ssh.more(40))) throw new Error(`the ssh session stopped after the ${side}-side restart: ${ssh.stderr}`);
      await sleep(1_000);
    }
    const end = Date.now();
    const code = await ssh.finish();
    const report = (await streams.stop())[STREAM];
    const lines = ssh.intact();
    const result: RestartBenchResult = {
      rounds: marks.map((m, i) => {
        const to = marks[i + 1]?.at ?? end;
        return {
          side: m.side,
          stopMs: m.r.stoppedMs,
          downMs: m.r.downMs,
          handedOver: m.r.handedOver,
          sshGapMs: ssh.gapIn(m.at, to),
          streamGapMs: Math.max(0, ...report.gaps.filter((g) => g.to >= m.at && g.to < to).map((g) => g.to - g.from)),
        };
      }),
      sshLines: lines ?? ssh.lines.length,
      sshIntact: code === 0 && lines !== undefined,
      streamBytes: report.received,
      streamIntact: report.error === null && !report.serverError && report.ended && report.inOrder && report.received === report.sent,
      plainSshReset: false,
      plainStreamReset: false,
    };

    // Baseline: the client-side spookd without a service manager, restarted plainly.
    await lab.stop('ra');
    mgr.ra.flush();
    await lab.start('ra');
    await until('the carrier', async () => (await lab.admin('ra', 'wrap-stats')).peers[0].carrier === 'up' || undefined, 20_000);
    const plainStreams = new CutStreams(lab.host('rb').ns, lab.host('ra').ns, addr, [STREAM_PLAIN]);
    stops.push(() => plainStreams.close());
    await plainStreams.start();
    const plainSsh = new SshTicker(lab.host('ra').ns, addr, sshd, join(lab.dir, 'stop-ticker-plain'));
    stops.push(() => plainSsh.kill());
    if (!(await plainSsh.more(20))) throw new Error(`no ssh output: ${plainSsh.stderr}`);
    await lab.stop('ra');
    await lab.start('ra');
    const plainCode = await Promise.race([plainSsh.exit, sleep(20_000).then(() => -1)]);
    const plain = (await plainStreams.stop())[STREAM_PLAIN];
    result.plainSshReset = plainCode !== 0 && plainCode !== -1;
    result.plainStreamReset = !!(plain.error ?? plain.serverError);
    return result;
  } finally {
    for (const s of stops.reverse()) await s();
    for (const h of ['ra', 'rb']) await lab.stop(h).catch(() => undefined);
    await lab.destroy();
    mgr.ra.close();
    mgr.rb.close();
  }
}

export function formatRestartBench(r: RestartBenchResult): string[] {
  return [
    'restart  side    stop ms  down ms  handed  ssh gap ms  stream gap ms',
    ...r.rounds.map(
      (x, i) =>
        `${String(i + 1).padEnd(9)}${x.side.padEnd(8)}${String(x.stopMs).padStart(7)}  ${String(x.downMs).padStart(7)}  ${String(x.handedOver).padStart(6)}  ${String(x.sshGapMs).padStart(10)}  ${String(x.streamGapMs).padStart(13)}`,
    ),
    `through the store: ssh ${r.sshLines} lines ${r.sshIntact ? 'all in order, clean exit' : 'NOT INTACT'}; stream ${(r.streamBytes / 1e6).toFixed(1)} MB ${r.streamIntact ? 'all in order, clean FIN' : 'NOT INTACT'}`,
    `plain restart (no store, same run): ssh ${r.plainSshReset ? 'reset' : 'survived'}, stream ${r.plainStreamReset ? 'reset' : 'survived'}`,
  ];
}
