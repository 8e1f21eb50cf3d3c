/**
 * The client host's address changes mid-transfer (issue 17: better where TCP fails). Host `c`
 * streams from two servers through wrappers, one to `s1` (c dials that carrier: it is the
 * pair's sequencer) and one to `s2` (s2 dials, to c's address as the pair's roaming knows it),
 * and from `s1` directly. Then c gets a new address and loses the old one (testing/lab/roaming.ts).
 *
 * - The direct connection is bound to the old address: no byte comes after the change.
 * - Both wrapped streams go on with every byte in order, whichever side dials: c sees its
 *   carrier's local address gone and redials from the new one; s2 redials to c's new address
 *   on the first authenticated ETCP packet from it (PROTOCOL §16.2, *Redial*), well within the
 *   500 ms redial interval and before the carrier's silence timer (3 s) would have acted.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireRoot, sleep } from '../../testing/lab/netns.js';
import { CutStreams, type StreamReport } from '../../testing/lab/cutstream.js';
import { RoamLab } from '../../testing/lab/roaming.js';
import { REDIAL_MAX_MS } from '../../core/wrap/redial.js';

const VIA_S1 = 7401; // c dials the carrier
const VIA_S2 = 7402; // s2 dials the carrier
const DIRECT = 7403;
const SILENCE_MS = 3_000; // wrap.silenceMs's default: the carrier would be dropped then, without the redial on roaming

let net: RoamLab;
const streams: CutStreams[] = [];

beforeAll(async () => {
  requireRoot();
  net = new RoamLab(71, 48200);
  await net.start([
    { port: VIA_S1, peer: 's1' },
    { port: VIA_S2, peer: 's2' },
  ]);
}, 60_000);

afterAll(async () => {
  for (const s of streams) s.close();
  await net?.destroy();
}, 30_000);

/** From `at` to the first byte after the silence that spans it (0: no silence of gapMs or more). */
function resumeAfterChange(s: StreamReport, at: number): number {
  const g = s.gaps.find((x) => x.to >= at);
  return g && g.from <= at + 1_000 ? g.to - at : 0;
}

describe("the client host's address changes mid-transfer", () => {
  it('the roles are as the test needs them: c dials s1, s2 dials c', () => {
    const roles = Object.fromEntries(
      net
        .log('c')
        .filter((l) => l.msg === 'pair configured')
        .map((l) => [l.peer, l.role]),
    );
    expect(roles).toEqual({ s1: 'sequencer', s2: 'follower' });
  });

  it('both wrapped streams continue with every byte in order, the direct one stalls; the carriers are redialled at once', async () => {
    const a = new CutStreams(net.ns('s1'), net.ns('c'), net.s1Addr, [VIA_S1, DIRECT], { gapMs: 200, stopWaitMs: 3_000 });
    const b = new CutStreams(net.ns('s2'), net.ns('c'), net.s2Addr, [VIA_S2], { gapMs: 200, stopWaitMs: 3_000 });
    streams.push(a, b);
    await Promise.all([a.start(), b.start()]);
    await sleep(1_000);
    const oldAddr = net.clientAddr;
    const movedAt = Date.now();
    const newAddr = net.moveClient();
    await sleep(8_000);
    const [ra, rb] = await Promise.all([a.stop(), b.stop()]);

    for (const [name, s] of [
      ['via s1 (c dials)', ra[VIA_S1]],
      ['via s2 (s2 dials)', rb[VIA_S2]],
    ] as const) {
      expect(s.error, name).toBeNull();
      expect(s.ended, name).toBe(true);
      expect(s.inOrder, name).toBe(true);
      expect(s.received, name).toBe(s.sent);
      expect(s.lastAt, name).toBeGreaterThan(movedAt + 5_000);
    }
    const direct = ra[DIRECT];
    expect(direct.error).toBe('stalled');
    expect(direct.inOrder).toBe(true);
    expect(direct.lastAt).toBeLessThan(movedAt + 1_000); // at most what was in flight at the change

    // Who redialled, when: after the change, before the silence timer would have dropped the carrier.
    const after = (h: 'c' | 's1' | 's2', msg: string, peer: string, from = movedAt): number | undefined =>
      net.log(h).find((l) => l.time >= from && l.msg === msg && l.peer === peer)?.time;
    // s2: the first packet from c's new address moves the pair, and the carrier dial follows it in
    // the same turn (not at the next redial tick, up to 500 ms later).
    const roamed = net.log('s2').find((l) => l.time >= movedAt && l.msg === 'peer address changed');
    expect(roamed?.to, JSON.stringify(roamed)).toContain(newAddr);
    const moved = net.log('s2').find((l) => l.time >= roamed!.time && l.msg === 'the peer moved: dialling its new address');
    expect(moved?.to, JSON.stringify(moved)).toBe(newAddr);
    expect(moved?.from).toContain(oldAddr);
    expect(moved?.on).toBe('peer-heard'); // started by the packet itself, not by the next redial tick
    expect(moved!.time - roamed!.time).toBeLessThan(100); // one synchronous call chain (a GC pause apart)
    const s2Up = after('s2', 'carrier up', 'c', moved!.time);
    expect(s2Up).toBeDefined();
    expect(s2Up! - moved!.time).toBeLessThan(REDIAL_MAX_MS);
    expect(moved!.time - movedAt).toBeLessThan(SILENCE_MS);
    // c: its carrier to s1 left from the old address; it sees that and dials from the new one.
    const gone = after('c', 'the carrier local address is gone: redialling', 's1');
    expect(gone).toBeDefined();
    const cUp = after('c', 'carrier up', 's1', gone);
    expect(cUp).toBeDefined();
    expect(cUp! - gone!).toBeLessThan(REDIAL_MAX_MS);
    expect(gone! - movedAt).toBeLessThan(SILENCE_MS);
    // Neither carrier waited for the silence timer.
    for (const h of ['c', 's1', 's2'] as const)
      expect(net.log(h).filter((l) => l.time >= movedAt && l.msg === 'dropping the carrier' && l.reason === 'silence')).toEqual([]);

    const w1 = resumeAfterChange(ra[VIA_S1], movedAt);
    const w2 = resumeAfterChange(rb[VIA_S2], movedAt);
    console.log(
      `address change ${oldAddr} -> ${newAddr}: wrapped via s1 (c dials) resumed ${w1} ms after it, via s2 (s2 dials) ${w2} ms ` +
        `(c's first packet from the new address reached s2 after ${roamed!.time - movedAt} ms, s2 dialled ${moved!.time - roamed!.time} ms later, ` +
        `its carrier up ${s2Up! - moved!.time} ms after that; c saw its local address gone after ${gone! - movedAt} ms); ` +
        `direct: no byte after ${direct.lastAt - movedAt} ms, stalled`,
    );
    expect(w1).toBeLessThan(SILENCE_MS);
    expect(w2).toBeLessThan(SILENCE_MS);
  }, 90_000);
});
