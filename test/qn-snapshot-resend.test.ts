/**
 * A follower that takes a snapshot's fragments (its link acknowledges them) but whose Raft
 * never moves its offset cannot make its leader resend the transfer without bound
 * (docs/PROTOCOL.md §15.4, "Snapshots").
 */
import { describe, expect, it } from 'vitest';
import { decodeEnvelope, encodeEnvelope } from '../wire/qn.js';
import { Trio } from './domain-trio.js';

/** A trio whose follower H lags past the leader's log: the leader sends it a ~300 KiB snapshot. */
function lagging(): { t: Trio; L: ReturnType<Trio['leader']> & object; H: ReturnType<Trio['leader']> & object } {
  const t = new Trio(11, { maxLogEntries: 8 });
  t.run(1000);
  expect(t.put('a', '1')).toBe('committed');
  const L = t.leader()!;
  const H = t.follower()!;
  t.isolate(H.id);
  for (let i = 0; i < 300; i++)
    L.propose(t.now, [{ register: 'kv', delta: { op: 1, key: new Uint8Array([i >> 8, i & 255]), value: new Uint8Array(1000).fill(i) } }]);
  t.run(500);
  expect(L.raft.firstIndex).toBeGreaterThan(H.raft.lastIndex + 1);
  return { t, L, H };
}

/** The octets of the snapshot a leader sends (its chunks' data). */
function snapshotOctets(L: { raft: { snapshotIndex: number } } & object): number {
  return (L as unknown as { raft: { snap: { data: Uint8Array } } }).raft.snap.data.length;
}

describe('a follower that acknowledges snapshot fragments and never advances (core/qn/raft.ts onSnapResp)', () => {
  it('octets the leader sends it per octet it sends', () => {
    const { t, L, H } = lagging();
    // H's link takes every fragment; its Raft answers every chunk at the offset `lie` picks.
    let n = 0;
    let lie: (k: number) => number = () => 0;
    const handle = L.handleDatagram.bind(L);
    L.handleDatagram = (now, from, bytes) => {
      if (from === H.id) {
        const env = decodeEnvelope(bytes);
        if (env.body.t === 'snapResp') bytes = encodeEnvelope({ ...env, body: { ...env.body, offset: lie(n++) } });
      }
      handle(now, from, bytes);
    };
    let toH = 0;
    let fromH = 0;
    t.tap = (from, to, bytes) => {
      if (from === L.id && to === H.id) toH += bytes.length;
      if (from === H.id && to === L.id) fromH += bytes.length;
    };
    t.isolate(H.id, false);
    // Never past offset 0, for 2 s (100 heartbeats).
    t.run(2000);
    const stuck = { toH, fromH };
    console.log(`offset kept at 0 for 2 s: L sent H ${toH} octets, H sent ${fromH} (${(toH / fromH).toFixed(0)}x)`);
    // Alternating one chunk acknowledged and offset 0 again.
    toH = fromH = 0;
    lie = (k) => (k % 2 === 0 ? 16 * 1024 : 0);
    t.run(2000);
    console.log(`offset alternating 16 KiB / 0 for 2 s: L sent H ${toH} octets, H sent ${fromH} (${(toH / fromH).toFixed(0)}x)`);
    const alt = { toH, fromH };
    t.tap = undefined;
    // 100 heartbeats: the snapshot once, then its window (8 chunks of 16 KiB) again after 1, 2,
    // 4 ... heartbeats without progress, not at each (before: 12.7 MB, and a livelock).
    const windows = 10 * 8 * 16 * 1024 * 1.1;
    expect(stuck.toH).toBeLessThan(snapshotOctets(L) + windows);
    expect(alt.toH).toBeLessThan(windows);
    // The domain goes on.
    expect(t.put('b', '2')).toBe('committed');
  });

  it('an honest follower still takes the snapshot, and one that restarts mid-transfer as well', () => {
    for (const restart of [false, true]) {
      const { t, L, H } = lagging();
      let got = 0;
      const handle = H.handleDatagram.bind(H);
      // The restart: H stops at the 60th datagram of the transfer (of ~250), and starts again 100 ms later.
      H.handleDatagram = (now, from, bytes) => {
        if (restart && ++got === 60) t.stop(H.id);
        else handle(now, from, bytes);
      };
      t.isolate(H.id, false);
      let H2 = H;
      if (restart) {
        for (let i = 0; i < 400 && got < 60; i++) t.run(5);
        expect(got).toBe(60);
        expect(H.raft.applied).toBeLessThan(L.raft.applied);
        t.run(100);
        H2 = t.start(H.id);
      }
      const start = t.now;
      for (let i = 0; i < 1000 && H2.raft.applied < L.raft.applied; i++) t.run(5);
      console.log(`${restart ? 'restarted' : 'honest'} follower caught up in ${t.now - start} ms`);
      expect(H2.raft.applied).toBe(L.raft.applied);
      expect(H2.state.digest()).toEqual(L.state.digest());
    }
  });
});
