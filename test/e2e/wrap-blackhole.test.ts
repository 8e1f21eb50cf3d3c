/**
 * Resume after an outage in the middle of the path (issue 17: better where TCP fails). The two
 * hosts are joined through a bridge in a third namespace; the cut takes one port off the
 * bridge, so both hosts keep their carrier and every packet, SYNs included, vanishes silently
 * (an `ip link set … down` on a host instead fails its sends locally, and the kernel retries
 * those every 500 ms without backoff). A wrapped and a direct stream cross the same 20 s cut:
 * the wrapped one carries bytes again within 1 s of the heal (carrier dial attempts overlap, one
 * every 500 ms at most, core/wrap/redial.ts), the direct one when its retransmission backoff
 * next fires (about 25 s after the loss: 5 s after the heal here).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { Lab, requireRoot, sleep, until } from '../../testing/lab/netns.js';
import { CutStreams } from '../../testing/lab/cutstream.js';

const WRAPPED = 7201;
const DIRECT = 7202;
const CUT_MS = 20_000; // then 6 s and 7.3 s

let lab: Lab;
let streams: CutStreams | undefined;
const ip = (...args: string[]): string => execFileSync('ip', args, { encoding: 'utf8' });
let mid = '';

beforeAll(async () => {
  requireRoot();
  lab = new Lab(['hc', 'hs', 'hm'], [], 48000);
  const [c, s] = [lab.host('hc'), lab.host('hs')];
  mid = lab.host('hm').ns;
  ip('-n', mid, 'link', 'add', 'br0', 'type', 'bridge');
  ip('-n', mid, 'link', 'set', 'br0', 'up');
  for (const [h, addr, port] of [
    [c, '10.77.69.1', 'p1'],
    [s, '10.77.69.2', 'p2'],
  ] as const) {
    const dev = `v69${h.name}`;
    ip('link', 'add', dev, 'netns', h.ns, 'type', 'veth', 'peer', 'name', port, 'netns', mid);
    ip('-n', h.ns, 'addr', 'add', `${addr}/24`, 'dev', dev);
    ip('-n', h.ns, 'link', 'set', dev, 'up');
    ip('-n', mid, 'link', 'set', port, 'master', 'br0');
    ip('-n', mid, 'link', 'set', port, 'up');
  }
  // Each host's address on the link to the other (what Lab.configure gives as endpoints).
  c.addrs.set('hs', '10.77.69.1');
  s.addrs.set('hc', '10.77.69.2');
  const regs = [{ name: 'r', kind: 'map' }];
  lab.configure('hc', regs, { wrap: { wrappers: [{ protocol: 'tcp', port: WRAPPED, peer: 'hs' }] } });
  lab.configure('hs', regs, { wrap: { allow: [{ peer: 'hc', to: `10.77.69.2:${WRAPPED}` }] } });
  await lab.start('hc');
  await lab.start('hs');
  await until('the carrier', async () => (await lab.admin('hc', 'wrap-stats')).peers[0].carrier === 'up' || undefined, 20_000);
}, 60_000);

afterAll(async () => {
  streams?.close();
  await lab?.destroy();
}, 30_000);

describe('a 20 s blackhole in the middle of the path', () => {
  it('the wrapped stream resumes within 1 s of the heal, the direct one at its next retransmission; both complete in order', async () => {
    streams = new CutStreams(lab.host('hs').ns, lab.host('hc').ns, '10.77.69.2', [WRAPPED, DIRECT]);
    await streams.start();
    // The long cut, then two short ones (past the carrier's 3 s silence) that heal at other
    // phases of the redial schedule.
    const cuts: { downAt: number; upAt: number }[] = [];
    for (const [ms, after] of [
      [CUT_MS, 3_000],
      [6_000, 3_000],
      [7_300, 8_000], // the last wait lets the direct stream's backoff fire
    ]) {
      const downAt = Date.now();
      ip('-n', mid, 'link', 'set', 'p1', 'nomaster');
      await sleep(ms);
      ip('-n', mid, 'link', 'set', 'p1', 'master', 'br0');
      cuts.push({ downAt, upAt: Date.now() });
      await sleep(after);
    }
    const r = await streams.stop();
    const [first] = cuts;
    for (const [name, s] of [
      ['wrapped', r[WRAPPED]],
      ['direct', r[DIRECT]],
    ] as const) {
      expect(s.error, name).toBeNull();
      expect(s.serverError, name).toBeUndefined();
      expect(s.ended, name).toBe(true);
      expect(s.inOrder, name).toBe(true);
      expect(s.received, name).toBe(s.sent);
      expect(
        s.gaps.some((g) => g.from <= first.downAt + 1_000 && g.to >= first.upAt),
        `${name} ${JSON.stringify(s.gaps)}`,
      ).toBe(true);
    }
    // Per cut: from the heal to the first byte after it.
    const resumeMs = (port: number, cut: { upAt: number }): number => r[port].gaps.find((g) => g.to >= cut.upAt)!.to - cut.upAt;
    const wrapped = cuts.map((c) => resumeMs(WRAPPED, c));
    console.log(
      `20 s blackhole: wrapped stream resumed ${wrapped[0]} ms after the heal, direct ${resumeMs(DIRECT, first)} ms (TCP's backoff); ` +
        `after 6 s and 7.3 s cuts the wrapped one resumed in ${wrapped[1]} and ${wrapped[2]} ms`,
    );
    for (const ms of wrapped) expect(ms).toBeLessThan(1_000);
    const st = (await lab.admin('hc', 'wrap-stats')).wrappers[0];
    expect(st.connections).toBe(1);
    expect(st.closes['hold-expired'] ?? 0).toBe(0);
  }, 90_000);
});
