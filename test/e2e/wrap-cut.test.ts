/**
 * Never worse than direct (issue 17): a wrapped stream and a direct one, between the same two
 * namespaces, through the same 45 s cut of the link (`ip link set … down`), with the wrapper's
 * default hold (the host's TCP patience, 925 s with Linux's defaults). Both survive, on their
 * first connection, with every byte in order and the server's FIN at the end; the wrapped one
 * carries bytes again within 1 s of `ip link set … up` (the carrier's redial interval is capped,
 * core/wrap/redial.ts), the direct one whenever TCP's retransmission backoff next fires.
 * Longer cuts (2 and 10 min, with ssh) run in `make soak` (test/soak/wrap-cuts.soak.ts).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, requireRoot, sleep } from '../../testing/lab/netns.js';
import { CutStreams, resumeAfter, startWrappedPair } from '../../testing/lab/cutstream.js';
import { expectCarriedThrough } from '../helpers.js';
import { readTcpRetries2 } from '../../drivers/wrap/hold.js';
import { defaultHoldMs } from '../../core/wrap/hold.js';

const WRAPPED = 7101;
const DIRECT = 7102;
const CUT_MS = 45_000;

let lab: Lab;
let streams: CutStreams | undefined;

beforeAll(async () => {
  requireRoot();
  lab = new Lab(['kc', 'ks'], [{ a: 'kc', b: 'ks', subnet: 68 }], 47950);
  // No hold: the default.
  await startWrappedPair(lab, 'kc', 'ks', lab.host('ks').addrs.get('kc')!, WRAPPED);
}, 60_000);

afterAll(async () => {
  streams?.close();
  await lab?.destroy();
}, 30_000);

describe('a 45 s cut, wrapped and direct', () => {
  it('the default hold is the host TCP patience (925 s with the kernel defaults)', async () => {
    const [w] = await lab.admin('kc', 'wraps');
    expect(w.holdMs).toBe(defaultHoldMs(readTcpRetries2()));
    expect(w.holdMs).toBeGreaterThan(CUT_MS);
  });

  it('both survive with every byte in order; the wrapped one resumes within 1 s of the link coming back', async () => {
    const addr = lab.host('ks').addrs.get('kc')!;
    streams = new CutStreams(lab.host('ks').ns, lab.host('kc').ns, addr, [WRAPPED, DIRECT]);
    await streams.start();
    const before = (await lab.admin('kc', 'wraps'))[0];
    expect(before.active).toBe(1);
    const downAt = Date.now();
    lab.setLink('kc', 'ks', false);
    await sleep(CUT_MS);
    lab.setLink('kc', 'ks', true);
    const upAt = Date.now();
    // The wrapped stream flows again before the direct one's next retransmission (~51 s after the loss).
    await sleep(5_000);
    const r = await streams.stop();
    const wrapped = r[WRAPPED];
    const direct = r[DIRECT];
    expectCarriedThrough('wrapped', wrapped, { downAt, upAt });
    expectCarriedThrough('direct', direct, { downAt, upAt });
    const resumeMs = (s: typeof wrapped): number => resumeAfter(s, upAt);
    console.log(
      `45 s cut: wrapped stream resumed ${resumeMs(wrapped)} ms after the link came back, direct ${resumeMs(direct)} ms; ` +
        `${(wrapped.received / 1e6).toFixed(1)} MB wrapped, ${(direct.received / 1e6).toFixed(1)} MB direct, all in order`,
    );
    expect(resumeMs(wrapped)).toBeLessThan(1_000);
    // One connection, held through the cut, never closed.
    const after = (await lab.admin('kc', 'wraps'))[0];
    expect(after.connections - before.connections).toBe(0);
    const st = (await lab.admin('kc', 'wrap-stats')).wrappers[0];
    expect(st.outages).toBeGreaterThanOrEqual(1);
    expect(st.closes['hold-expired'] ?? 0).toBe(0);
  }, 110_000);
});
