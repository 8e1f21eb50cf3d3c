/**
 * The survival matrix of issue 17 (never worse than direct), too long for `make test`: run by
 * `make soak` (vitest.soak.config.ts). Two hosts joined through a bridge (testing/lab/bridged.ts);
 * per cut length, an ssh session that prints a counter every 200 ms and a counter stream, each
 * once through a wrapper with the default hold (the host's TCP patience, 925 s) and once
 * direct, through the same silent mid-path outage of 2 min, then 10 min. Each that survives
 * direct must survive wrapped, with every line and byte in order; the resume times are printed.
 * (30 s and 45 s cuts run in `make test`: test/e2e/wrap-cut.test.ts, wrap-blackhole.test.ts.)
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyFileSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { requireRoot, sleep, until } from '../../testing/lab/netns.js';
import { CutStreams, resumeAfter } from '../../testing/lab/cutstream.js';
import { BridgedPair } from '../../testing/lab/bridged.js';
import { nsRun, startSshd, type ExecResult, type SshdServer } from '../../testing/lab/servers.js';

const SSH_WRAPPED = 2222;
const SSH_DIRECT = 2223;
const STREAM_WRAPPED = 7301;
const STREAM_DIRECT = 7302;

let net: BridgedPair;
const sshd: SshdServer[] = [];

beforeAll(async () => {
  requireRoot();
  net = new BridgedPair('sc', 'ss', 70, 48100);
  const lab = net.lab;
  const regs = [{ name: 'r', kind: 'map' }];
  lab.configure('sc', regs, {
    wrap: {
      wrappers: [
        { protocol: 'ssh', port: SSH_WRAPPED, peer: 'ss' },
        { protocol: 'tcp', port: STREAM_WRAPPED, peer: 'ss' },
      ],
    },
  });
  lab.configure('ss', regs, {
    wrap: { allow: [SSH_WRAPPED, STREAM_WRAPPED].map((p) => ({ peer: 'sc', to: `${net.serverAddr}:${p}` })) },
  });
  for (const port of [SSH_WRAPPED, SSH_DIRECT])
    sshd.push(await startSshd(net.ns('ss'), net.serverAddr, port, join(lab.dir, `sshd${port}`)));
  await lab.start('sc');
  await lab.start('ss');
  await until('the carrier', async () => (await lab.admin('sc', 'wrap-stats')).peers[0].carrier === 'up' || undefined, 20_000);
}, 90_000);

afterAll(async () => {
  await Promise.allSettled(sshd.map((s) => s.stop()));
  // The daemons' logs outlive the lab: a failed soak is read afterwards.
  for (const h of ['sc', 'ss'])
    try {
      copyFileSync(join(net.lab.host(h).dir, 'spookd.log'), join(tmpdir(), `spook-soak-${h}.log`));
    } catch {
      /* no log */
    }
  await net?.lab.destroy();
}, 30_000);

/** An ssh session printing "<counter> <ms>" every 200 ms until `stop` exists. */
function counterSession(s: SshdServer, stop: string, timeoutMs: number): Promise<ExecResult> {
  const loop = `i=0; while [ ! -e ${stop} ]; do echo "$i $(date +%s%3N)"; i=$((i+1)); sleep 0.2; done`;
  return nsRun(net.ns('sc'), 'ssh', [...s.sshArgs, net.serverAddr, loop], { timeoutMs });
}

/** How many lines, and whether they count from 0 in order, in the session's output. */
function check(r: ExecResult): { lines: number; inOrder: boolean } {
  const lines = r.stdout
    .trim()
    .split('\n')
    .map((l) => Number(l.split(' ')[0]));
  return { lines: lines.length, inOrder: lines.every((n, i) => n === i) };
}

describe('survival matrix: wrapped (default hold) vs direct through silent mid-path outages', () => {
  for (const cutMs of [120_000, 600_000]) {
    it(`${cutMs / 60_000} min: every session and stream that survives direct survives wrapped`, async () => {
      const stop = join(net.lab.dir, `stop-${cutMs}`);
      rmSync(stop, { force: true });
      const limit = cutMs + 300_000;
      const sessions = [counterSession(sshd[0], stop, limit), counterSession(sshd[1], stop, limit)];
      const streams = new CutStreams(net.ns('ss'), net.ns('sc'), net.serverAddr, [STREAM_WRAPPED, STREAM_DIRECT]);
      try {
        await streams.start();
        await sleep(2_000);
        net.cut();
        await sleep(cutMs);
        net.heal();
        const upAt = Date.now();
        // What the hosts see after the heal (neighbour entries, carrier state), for a slow resume.
        const timeline: string[] = [];
        for (let i = 0; i < 40; i++) {
          const [c, sv] = await Promise.all([net.lab.admin('sc', 'wrap-stats'), net.lab.admin('ss', 'wrap-stats')]);
          const neigh = (n: string): string => net.neigh(n).replace(/\s+/g, ' ').trim();
          timeline.push(
            `+${Date.now() - upAt} ms: sc carrier ${c.peers[0].carrier} (${c.peers[0].lastError}), ss ${sv.peers[0].carrier}; ` +
              `neigh sc [${neigh('sc')}] ss [${neigh('ss')}]`,
          );
          if (c.peers[0].carrier === 'up' && i >= 4) break;
          await sleep(500);
        }
        console.log(timeline.join('\n'));
        // Direct TCP resumes at its next retransmission: up to TCP_RTO_MAX (120 s) after the heal.
        await sleep(130_000);
        writeFileSync(stop, '');
        const [w, d] = await Promise.all(sessions);
        const r = await streams.stop(60_000);
        const sw = check(w);
        const sd = check(d);
        // From the heal to the first byte after it (NaN: no silence across the outage, which cannot be).
        const resume = (port: number): number => resumeAfter(r[port], upAt);
        console.log(
          `${cutMs / 1000} s outage: ssh wrapped exit ${w.code} (${sw.lines} lines, in order ${sw.inOrder}), direct exit ${d.code} ` +
            `(${sd.lines} lines, in order ${sd.inOrder}); stream wrapped ${r[STREAM_WRAPPED].error ?? 'ok'} resumed ` +
            `${resume(STREAM_WRAPPED)} ms after the heal, direct ${r[STREAM_DIRECT].error ?? 'ok'} ` +
            `${resume(STREAM_DIRECT)} ms`,
        );
        // Never worse than direct: whatever survived direct survived wrapped, completely and in order.
        if (d.code === 0) {
          expect(w.code, w.stderr).toBe(0);
          expect(sw.inOrder).toBe(true);
        }
        if (r[STREAM_DIRECT].error === null) {
          expect(r[STREAM_WRAPPED].error).toBeNull();
          expect(r[STREAM_WRAPPED].inOrder).toBe(true);
          expect(r[STREAM_WRAPPED].received).toBe(r[STREAM_WRAPPED].sent);
        }
        // With the default hold (925 s) both outages are within TCP's patience: all survive.
        expect(w.code, w.stderr).toBe(0);
        expect(r[STREAM_WRAPPED].ended).toBe(true);
        expect(resume(STREAM_WRAPPED)).toBeLessThan(1_000);
      } finally {
        streams.close();
      }
    }, 1_200_000);
  }
});
