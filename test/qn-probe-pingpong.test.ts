/**
 * A follower's refusals and acknowledgements cannot make its leader resend entries without
 * bound (docs/PROTOCOL.md §15.4, "Flow"). Before, a member alternating a refusal at its match
 * index (the leader moved its next index back and probed at once) with an acknowledgement of
 * that same index (the leader left probing and sent a window of up to 16 appends again) made the
 * leader send ~20 KB for every two messages of a few octets, as fast as it sent them, with no
 * time passing; a refusal hinting below the match index drew a fresh probe each time as well.
 */
import { describe, expect, it } from 'vitest';
import { decodeEnvelope, encodeEnvelope } from '../wire/qn.js';
import { DOMAIN, Trio } from './domain-trio.js';

describe('a hostile follower and its leader (core/qn/raft.ts onAppendResp)', () => {
  it('refusals and acknowledgements at the match index: at most a probe until the next heartbeat, not a window per message', () => {
    const t = new Trio(3);
    t.run(1000);
    expect(t.put('a', '1')).toBe('committed');
    const L = t.leader()!;
    const H = t.follower()!;
    // H misses 300 entries (of ~100 octets each), then the test speaks for it.
    t.isolate(H.id);
    for (let i = 0; i < 300; i++)
      L.propose(t.now, [{ register: 'kv', delta: { op: 1, key: new Uint8Array([i >> 8, i & 255]), value: new Uint8Array(100) } }]);
    t.run(500);
    expect(L.raft.commit).toBeGreaterThan(300);
    t.stop(H.id);
    t.isolate(H.id, false);
    t.run(200);
    const M = L.raft.progressOf(H.id)!.match;
    expect(M).toBeLessThan(L.raft.commit - 290);
    let toH = 0;
    let fromH = 0;
    t.tap = (from, to, bytes) => {
      if (from === L.id && to === H.id && decodeEnvelope(bytes).body.t === 'append') toH += bytes.length;
    };
    const say = (ok: boolean, index: number): void => {
      const bytes = encodeEnvelope({
        domain: DOMAIN,
        from: H.id,
        to: L.id,
        ttl: 8,
        body: { t: 'appendResp', term: L.raft.term, ok, index },
      });
      fromH += bytes.length;
      L.handleDatagram(t.now, H.id, bytes);
      t.deliver();
    };
    // No time passes: no heartbeat is due.
    for (let i = 0; i < 200; i++) {
      say(false, M);
      say(true, M);
    }
    const pairs = toH;
    for (let i = 0; i < 200; i++) say(false, Math.max(0, M - 10));
    console.log(
      `H sent ${fromH} octets in 600 messages; L sent it ${toH} octets of appends (${(toH / fromH).toFixed(0)}x): ${pairs} for 200 refusal/ack pairs, ${toH - pairs} for 200 refusals below the match`,
    );
    expect(L.raft.progressOf(H.id)!.match).toBe(M);
    // At most a few appends (a probe, no window) in all: well within what H sent.
    expect(toH).toBeLessThan(fromH);
    // Acknowledging one more entry each time, then refusing it: each entry it lacks is sent about
    // once (and a window at most once per heartbeat), not a window per pair.
    const log = (L.raft.lastIndex - M) * 120;
    const before = toH;
    for (let i = 1; i <= 200; i++) {
      say(true, M + i);
      say(false, M + i);
    }
    console.log(
      `200 pairs acknowledging one more entry each: L sent ${toH - before} octets of appends (the entries past H's match: ~${log})`,
    );
    expect(toH - before).toBeLessThan(log + 20_000);
    t.tap = undefined;
    // The domain goes on (H claimed entries it lacks: its own loss).
    expect(t.put('b', '2')).toBe('committed');
  });

  it('an honest follower that lost appends still catches up at once, and one cut off catches up after it returns', () => {
    const t = new Trio(4);
    t.run(1000);
    const L = t.leader()!;
    const F = t.follower()!;
    // Every third message to F lost for a while: refusals move its next index back, probes find where it is.
    let k = 0;
    let lost = 0;
    const handle = F.handleDatagram.bind(F);
    F.handleDatagram = (now, from, bytes) => {
      if (from === L.id && lossy && ++k % 3 === 0) return void lost++;
      handle(now, from, bytes);
    };
    let lossy = true;
    for (let i = 0; i < 200; i++) {
      L.propose(t.now, [{ register: 'kv', delta: { op: 1, key: new Uint8Array([i]), value: new Uint8Array(50) } }]);
      if (i % 10 === 0) t.run(5);
    }
    t.run(300);
    expect(lost).toBeGreaterThan(30);
    expect(F.raft.applied).toBe(L.raft.applied);
    lossy = false;
    t.isolate(F.id);
    for (let i = 0; i < 100; i++)
      L.propose(t.now, [{ register: 'kv', delta: { op: 1, key: new Uint8Array([i, 1]), value: new Uint8Array(50) } }]);
    t.run(300);
    t.isolate(F.id, false);
    expect(t.put('c', '3')).toBe('committed');
    t.run(300);
    expect(F.raft.applied).toBe(L.raft.applied);
    expect(F.state.digest()).toEqual(L.state.digest());
  });
});
