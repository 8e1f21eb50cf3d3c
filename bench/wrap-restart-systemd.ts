/**
 * `spook-lab bench wrap --only restart-systemd` (issue 17): `systemctl restart spookd` under a real
 * systemd (testing/lab/systemd.ts: /lib/systemd/systemd as PID 1 of the client host's own PID and
 * mount namespace), with a wrapped ssh session printing a line every 50 ms and a counter stream.
 * Rounds alternate the unit as shipped and, as the baseline from the same run, the unit with the
 * `ExecStartPre=spookd --check-config` it had before (a drop-in, then `systemctl daemon-reload`
 * outside the timed part): per restart, how long `systemctl restart` took (SIGTERM to the new
 * process's READY=1) and the longest silence of each connection. At the end: whether every ssh
 * line and stream byte arrived in order on the first connection.
 */
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Lab, sleep, until } from '../testing/lab/netns.js';
import { CutStreams } from '../testing/lab/cutstream.js';
import { startSshd } from '../testing/lab/servers.js';
import { SshTicker } from '../testing/lab/sshticker.js';
import { LAB_RUN, LabSystemd, spookdUnitFiles } from '../testing/lab/systemd.js';

export type UnitVariant = 'shipped' | 'check-config';

export interface SystemdRestartRound {
  unit: UnitVariant;
  /** `systemctl restart spookd`: SIGTERM to the new process's READY=1. */
  restartMs: number;
  sshGapMs: number;
  streamGapMs: number;
}

export interface SystemdRestartBenchResult {
  systemd: string;
  rounds: SystemdRestartRound[];
  /** Median per variant, and shipped / check-config (lower is better). */
  median: Record<UnitVariant, { restartMs: number; sshGapMs: number; streamGapMs: number }>;
  sshGapRatio: number;
  sshLines: number;
  sshIntact: boolean;
  streamBytes: number;
  streamIntact: boolean;
}

const STREAM = 9401;
const SSH = 9422;
const DROPIN = `${LAB_RUN}/units/spookd.service.d/bench-check-config.conf`;

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor(s.length / 2)] : 0;
};

export async function runSystemdRestartBench(o: { basePort: number; rounds?: number }): Promise<SystemdRestartBenchResult> {
  const rounds = o.rounds ?? 10;
  const lab = new Lab(['sa', 'sb'], [{ a: 'sa', b: 'sb', subnet: 69 }], o.basePort);
  const stops: (() => Promise<void> | void)[] = [];
  let sd: LabSystemd | undefined;
  try {
    const addr = lab.host('sb').addrs.get('sa')!;
    const regs = [{ name: 'r', kind: 'map' }];
    lab.configure('sa', regs, {
      logLevel: 'info',
      wrap: { wrappers: [STREAM, SSH].map((port) => ({ protocol: 'tcp', port, peer: 'sb' })) },
    });
    lab.configure('sb', regs, { logLevel: 'info', wrap: { allow: [STREAM, SSH].map((p) => ({ peer: 'sa', to: `${addr}:${p}` })) } });
    await lab.start('sb');
    sd = await LabSystemd.boot(lab, 'sa', spookdUnitFiles(lab, 'sa'));
    const m = sd;
    lab.host('sa').socket = m.path('/run/spook/admin.sock');
    await until(
      'spookd.service active',
      async () => (await m.show('spookd', ['ActiveState'])).ActiveState === 'active' || undefined,
      60_000,
      250,
    );
    await until('the carrier', async () => (await lab.admin('sa', 'wrap-stats')).peers[0].carrier === 'up' || undefined, 30_000);
    const sshd = await startSshd(lab.host('sb').ns, addr, SSH, join(lab.dir, 'sshd'));
    stops.push(() => sshd.stop());
    const streams = new CutStreams(lab.host('sb').ns, lab.host('sa').ns, addr, [STREAM], { gapMs: 50 });
    stops.push(() => streams.close());
    await streams.start();
    const ssh = new SshTicker(lab.host('sa').ns, addr, sshd, join(lab.dir, 'stop-ticker'));
    stops.push(() => ssh.kill());
    if (!(await ssh.more(20))) throw new Error(`no ssh output: ${ssh.stderr}`);

    const marks: { unit: UnitVariant; at: number; restartMs: number }[] = [];
    for (let i = 0; i < rounds; i++) {
      const unit: UnitVariant = i % 2 === 0 ? 'shipped' : 'check-config';
      if (unit === 'check-config')
        writeFileSync(
          m.path(DROPIN),
          '[Service]\nExecStartPre=/run/spk-lab/prefix/bin/spookd --config /run/spk-lab/etc/spook/spookd.conf --check-config\n',
        );
      else rmSync(m.path(DROPIN), { force: true });
      const reload = await m.systemctl('daemon-reload');
      if (reload.code !== 0) throw new Error(`systemctl daemon-reload: ${reload.stderr}`);
      await sleep(500);
      const at = Date.now();
      const r = await m.systemctl('restart', 'spookd');
      if (r.code !== 0) throw new Error(`systemctl restart spookd: ${r.stderr}`);
      marks.push({ unit, at, restartMs: Date.now() - at });
      if (!(await ssh.more(40))) throw new Error(`the ssh session stopped after restart ${i + 1}: ${ssh.stderr}`);
      await sleep(1_000);
    }
    const end = Date.now();
    const code = await ssh.finish();
    const report = (await streams.stop())[STREAM];
    const lines = ssh.intact();
    const rs: SystemdRestartRound[] = marks.map((x, i) => {
      const to = marks[i + 1]?.at ?? end;
      return {
        unit: x.unit,
        restartMs: x.restartMs,
        sshGapMs: ssh.gapIn(x.at, to),
        streamGapMs: Math.max(0, ...report.gaps.filter((g) => g.to >= x.at && g.to < to).map((g) => g.to - g.from)),
      };
    });
    const med = (u: UnitVariant): SystemdRestartBenchResult['median'][UnitVariant] => {
      const of = rs.filter((x) => x.unit === u);
      return {
        restartMs: median(of.map((x) => x.restartMs)),
        sshGapMs: median(of.map((x) => x.sshGapMs)),
        streamGapMs: median(of.map((x) => x.streamGapMs)),
      };
    };
    const shipped = med('shipped');
    const check = med('check-config');
    return {
      systemd: (await m.systemctl('--version')).stdout.split('\n')[0],
      rounds: rs,
      median: { shipped, 'check-config': check },
      sshGapRatio: check.sshGapMs ? shipped.sshGapMs / check.sshGapMs : 0,
      sshLines: lines ?? ssh.lines.length,
      sshIntact: code === 0 && lines !== undefined,
      streamBytes: report.received,
      streamIntact: report.error === null && !report.serverError && report.ended && report.inOrder && report.received === report.sent,
    };
  } finally {
    for (const s of stops.reverse()) await s();
    await sd?.destroy();
    await lab.stop('sb').catch(() => undefined);
    await lab.destroy();
  }
}

export function formatSystemdRestartBench(r: SystemdRestartBenchResult): string[] {
  const row = (label: string, x: { restartMs: number; sshGapMs: number; streamGapMs: number }): string =>
    `${label.padEnd(22)}${String(x.restartMs).padStart(10)}  ${String(x.sshGapMs).padStart(10)}  ${String(x.streamGapMs).padStart(13)}`;
  return [
    `${r.systemd}: systemctl restart spookd (client side)`,
    `${'restart  unit'.padEnd(22)}${'restart ms'.padStart(10)}  ${'ssh gap ms'.padStart(10)}  ${'stream gap ms'.padStart(13)}`,
    ...r.rounds.map((x, i) => row(`${String(i + 1).padEnd(9)}${x.unit}`, x)),
    row('median shipped', r.median.shipped),
    row('median check-config', r.median['check-config']),
    `ssh silence shipped / with ExecStartPre --check-config (same run): ${r.sshGapRatio.toFixed(2)}`,
    `ssh ${r.sshLines} lines ${r.sshIntact ? 'all in order, clean exit' : 'NOT INTACT'}; stream ${(r.streamBytes / 1e6).toFixed(1)} MB ${r.streamIntact ? 'all in order, clean FIN' : 'NOT INTACT'}`,
  ];
}
