/**
 * How often a leader weighs a difference for a follower (docs/PROTOCOL.md §15.4, "Catch-up by
 * difference"): at most once per electionMs. Weighing costs a walk of every entry between the
 * follower's match index and the applied index, and the state's difference of them. Before, it
 * was weighed once per match index: a follower that acknowledged one more entry each time it
 * was probed (every second heartbeat: a match that did not move since the previous one) made its
 * leader weigh again per 13-octet acknowledgement (~40 ms with 20,000 entries behind).
 */
import { describe, expect, it } from 'vitest';
import { encodeEnvelope } from '../wire/qn.js';
import { DeltaOp } from '../wire/delta.js';
import { DOMAIN, Trio } from './domain-trio.js';

describe('a leader weighs differences at a bounded rate (core/qn/raft.ts startDiff)', () => {
  it('a follower acknowledging one more entry per probe: at most one weighing per electionMs', () => {
    const t = new Trio(3, { maxLogEntries: 200_000, electionMs: 1000, heartbeatMs: 100 });
    t.run(5000);
    const L = t.leader()!;
    const H = t.follower()!;
    expect(t.put('x', '1')).toBe('committed');
    t.isolate(H.id);
    for (let i = 0; i < 20_000; i++) {
      L.propose(t.now, [{ register: 'kv', delta: { op: DeltaOp.Set, key: new Uint8Array([i >> 8, i & 255]), value: new Uint8Array(20) } }]);
      if (i % 500 === 0) t.run(5);
    }
    t.run(500);
    t.stop(H.id);
    t.isolate(H.id, false);
    t.run(300);
    let weighed = 0;
    const diff = L.state.diff.bind(L.state);
    L.state.diff = (base, entries) => {
      weighed++;
      return diff(base, entries);
    };
    const M = L.raft.progressOf(H.id)!.match;
    let ms = 0;
    const N = 20;
    for (let k = 1; k <= N; k++) {
      t.run(205); // two heartbeats: the follower, silent since the last, is probed again
      const bytes = encodeEnvelope({
        domain: DOMAIN,
        from: H.id,
        to: L.id,
        ttl: 8,
        body: { t: 'appendResp', term: L.raft.term, ok: true, index: M + k },
      });
      const t0 = performance.now();
      L.handleDatagram(t.now, H.id, bytes);
      ms += performance.now() - t0;
      t.deliver();
    }
    console.log(`${N} acknowledgements over ${(N * 205) / 1000} s: ${weighed} weighings, ${(ms / N).toFixed(1)} ms an acknowledgement`);
    expect(L.raft.progressOf(H.id)!.match).toBe(M + N);
    expect(weighed).toBeLessThanOrEqual(Math.ceil((N * 205) / 1000) + 1);
    expect(t.put('y', '2')).toBe('committed');
  });
});
