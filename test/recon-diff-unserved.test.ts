/**
 * Review of issue 16's catch-up by log diff (PROTOCOL.md §8.2.1, rev 1.12) from the side of
 * an unlucky network and an older or hostile peer.
 */
import { describe, expect, it } from 'vitest';
import type { RegisterSpec } from '../core/pair/types.js';
import type { MapState } from '../core/register/map.js';
import { decodeFrame } from '../wire/header.js';
import { MsgType, decodeMessages } from '../wire/messages.js';
import { enc, harness, proposeNow, set, type Harness } from './helpers.js';

const N = 2000;
const regs = (): RegisterSpec[] => [{ name: 'kv', kind: 'map', log: { maxRecords: 100_000, maxBytes: 1 << 26 } }];

function preload(h: Harness): void {
  for (const ep of [h.a, h.b])
    ep.pair.register('kv').restore(1, (st) => {
      for (let i = 0; i < N; i++) (st as MapState).put(enc(`key-${i}`), enc(`initial-${i}`), 1);
    });
}

/** A cut past the silence timeout, then `k` writes over few keys at the sequencer: the costing picks the diff. */
function hotGap(h: Harness, k: number): void {
  h.cut();
  h.world.run(h.world.now + 6_000);
  for (let i = 0; i < k; i++) proposeNow(h, h.a, 'kv', set(`key-${i % 40}`, `hot-${i}`));
  h.heal();
}

describe('a follower behind a sequencer that does not serve diffs', () => {
  it('a sequencer that drops every WANT_DIFF request (as rev 1.11 drops it, malformed) still gets the follower through, by ranges', () => {
    const h = harness(regs(), {}, 3);
    preload(h);
    expect(h.settle()).toBe(true);
    // Rev 1.11 decodes a ReconReq with flag bit 1 as malformed: the whole datagram is dropped.
    const pair = h.a.pair;
    const handle = pair.handleDatagram.bind(pair);
    let dropped = 0;
    pair.handleDatagram = (now: number, d: Uint8Array): boolean => {
      const ms = decodeMessages(decodeFrame(d, () => true).payload).messages;
      if (ms.some((m) => m.type === MsgType.ReconReq && m.diff !== undefined)) {
        dropped++;
        return false;
      }
      return handle(now, d);
    };
    hotGap(h, 800);
    // Before the fix: still REENTANGLING after 120 s, the request dropped ~85 times (the session restarted in diff mode).
    expect(h.settle(120_000)).toBe(true);
    expect(dropped).toBeGreaterThan(0);
    const rb = h.b.pair.register('kv');
    expect(rb.version).toBe(pair.register('kv').version);
  });

  it('a diff that takes long to build (ReconMeta answered, the parts later) is still waited for, not abandoned for ranges', () => {
    const h = harness(regs(), {}, 4);
    preload(h);
    expect(h.settle()).toBe(true);
    // In spookd a large diff is built a slice per timer call, charged to the peer's budget: the parts come late.
    const seq = h.a.pair.register('kv').sequencer!;
    const respond = seq.respond.bind(seq);
    const held: [number, Parameters<typeof respond>[1]][] = [];
    let nodes = 0;
    seq.respond = (now, m) => {
      if (m.type === MsgType.ReconNode) nodes++;
      if (m.type === MsgType.ReconDiff) held.push([now, m]);
      else respond(now, m);
    };
    hotGap(h, 800);
    const ok = h.world.run(h.world.now + 120_000, () => {
      while (held.length > 0 && h.world.now >= held[0][0] + 3_000) respond(h.world.now, held.shift()![1]);
      h.world.drain(h.a);
      return h.aligned();
    });
    expect(ok).toBe(true);
    expect(nodes).toBe(0); // no range reconciliation
    expect(h.b.pair.stats.drops['diff-mismatch']).toBeUndefined();
  });
});
