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
import { requireRoot, sleep } from '../../testing/lab/netns.js';
import { CutStreams, resumeAfter, startWrappedPair } from '../../testing/lab/cutstream.js';
import { expectCarriedThrough } from '../helpers.js';
import { BridgedPair } from '../../testing/lab/bridged.js';

const WRAPPED = 7201;
const DIRECT = 7202;
const CUT_MS = 20_000; // then 6 s and 7.3 s

let net: BridgedPair;
let streams: CutStreams | undefined;

beforeAll(async () => {
  requireRoot();
  net = new BridgedPair('hc', 'hs', 69, 48000);
  await startWrappedPair(net.lab, 'hc', 'hs', net.serverAddr, WRAPPED);
}, 60_000);

afterAll(async () => {
  streams?.close();
  await net?.lab.destroy();
}, 30_000);

describe('a 20 s blackhole in the middle of the path', () => {
  it('the wrapped stream resumes within 1 s of the heal, the direct one at its next retransmission; both complete in order', async () => {
    streams = new CutStreams(net.ns('hs'), net.ns('hc'), net.serverAddr, [WRAPPED, DIRECT]);
    await streams.start();
    // The long cut, then two short ones (past the carrier's 3 s silence) that heal at other
    // phases of the redial schedule.
    const cuts: { downAt: number; upAt: number }[] = [];
    for (const [ms, after] of [
      [CUT_MS, 8_000], // long enough for the direct stream's next retransmission (~25 s after the loss)
      [6_000, 3_000],
      [7_300, 8_000], // the last wait lets the direct stream's backoff fire
    ]) {
      const downAt = Date.now();
      net.cut();
      await sleep(ms);
      net.heal();
      cuts.push({ downAt, upAt: Date.now() });
      await sleep(after);
    }
    const r = await streams.stop();
    const [first] = cuts;
    expectCarriedThrough('wrapped', r[WRAPPED], first);
    expectCarriedThrough('direct', r[DIRECT], first);
    // Per cut: from the heal to the first byte after it.
    const resumeMs = (port: number, cut: { upAt: number }): number => resumeAfter(r[port], cut.upAt);
    const wrapped = cuts.map((c) => resumeMs(WRAPPED, c));
    console.log(
      `20 s blackhole: wrapped stream resumed ${wrapped[0]} ms after the heal, direct ${resumeMs(DIRECT, first)} ms (TCP's backoff); ` +
        `after 6 s and 7.3 s cuts the wrapped one resumed in ${wrapped[1]} and ${wrapped[2]} ms`,
    );
    for (const ms of wrapped) expect(ms).toBeLessThan(1_000);
    const st = (await net.lab.admin('hc', 'wrap-stats')).wrappers[0];
    expect(st.connections).toBe(1);
    expect(st.closes['hold-expired'] ?? 0).toBe(0);
  }, 90_000);
});
