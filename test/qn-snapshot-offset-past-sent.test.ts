/**
 * A follower's snapshot offset past what its leader sent (docs/PROTOCOL.md §15.4, "Snapshots"):
 * the window (8 chunks) bounds what one acknowledgement draws, whatever offset it claims.
 */
import { describe, expect, it } from 'vitest';
import { decodeEnvelope, encodeEnvelope } from '../wire/qn.js';
import { Trio } from './domain-trio.js';

describe('a snapResp whose offset is past what was sent (core/qn/raft.ts onSnapResp)', () => {
  it('draws at most the window per acknowledgement', () => {
    const t = new Trio(11, { maxLogEntries: 8 });
    t.run(1000);
    expect(t.put('a', '1')).toBe('committed');
    const L = t.leader()!;
    const H = t.follower()!;
    t.isolate(H.id);
    for (let i = 0; i < 1500; i++)
      L.propose(t.now, [{ register: 'kv', delta: { op: 1, key: new Uint8Array([i >> 8, i & 255]), value: new Uint8Array(1000).fill(i) } }]);
    t.run(500);
    expect(L.raft.firstIndex).toBeGreaterThan(H.raft.lastIndex + 1);
    const total = (L.raft as unknown as { snap: { data: Uint8Array } }).snap.data.length;
    // Octets of snapshot chunks the leader's Raft sends H (counted as it sends them).
    let chunks = 0;
    const raft = L.raft as unknown as { send(to: number, msg: { t: string; data?: Uint8Array }): void };
    const send = raft.send.bind(raft);
    raft.send = (to, msg) => {
      if (to === H.id && msg.t === 'snap') chunks += msg.data!.length;
      send(to, msg);
    };
    const sent = (): number => chunks;
    // H answers its leader's chunks claiming offsets near the end, rising by one octet an
    // answer, alternating with offset 0 (as a restarted follower does).
    let n = 0;
    let most = 0;
    const handle = L.handleDatagram.bind(L);
    L.handleDatagram = (now, from, bytes) => {
      const before = sent();
      if (from === H.id) {
        const env = decodeEnvelope(bytes);
        if (env.body.t === 'snapResp') {
          const k = n++;
          bytes = encodeEnvelope({ ...env, body: { ...env.body, offset: k % 2 === 0 ? total - 100_000 + k : 0 } });
        }
      }
      handle(now, from, bytes);
      if (from === H.id) most = Math.max(most, sent() - before);
    };
    let sum = 0;
    let fromH = 0;
    t.tap = (from, to, bytes) => {
      if (from === L.id && to === H.id) sum += bytes.length;
      if (from === H.id && to === L.id) fromH += bytes.length;
    };
    t.isolate(H.id, false);
    t.run(1000); // 50 heartbeats
    t.tap = undefined;
    const window = 8 * 16 * 1024;
    console.log(
      `snapshot ${total} octets; in 1 s L sent H ${sum} octets for ${fromH} (${(sum / fromH).toFixed(0)}x), ` +
        `at most ${most} octets after one of H's messages (window ${window})`,
    );
    expect(most).toBeLessThan(1.1 * window); // before: 902,939
    // No more than a window a heartbeat, and the snapshot once (before: 15.0 MB in 1 s, 335x its octets).
    expect(sum).toBeLessThan(total + 50 * 1.1 * window);
    expect(t.put('b', '2')).toBe('committed');
  });
});
