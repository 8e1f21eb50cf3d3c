/**
 * A member that lost entries it had acknowledged (its directory wiped, or restored from an old
 * backup, and restarted with the same identity) under the same leader and term (core/qn/raft.ts
 * checkLost). Before, a refusal could not move the leader's next index below match + 1 (against
 * a follower's refusal/acknowledgement ping-pong): the member was never sent them again and
 * stayed at applied 0 of 6, coherent the whole time.
 */
import { describe, expect, it } from 'vitest';
import { MemDomainStore } from '../testing/sim/mem-store.js';
import { decodeEnvelope, encodeEnvelope } from '../wire/qn.js';
import { DOMAIN, Trio } from './domain-trio.js';

describe('a member that lost entries it acknowledged (core/qn/raft.ts checkLost)', () => {
  it('wiped and restarted under the same leader and term: sent them again, caught up, counted and named', () => {
    const t = new Trio(4);
    t.run(1000);
    const A = t.leader()!;
    for (let i = 0; i < 5; i++) expect(t.put(`k${i}`, 'v')).toBe('committed');
    const C = [1, 2, 3].find((x) => x !== A.id)!;
    const term = A.raft.term;
    t.stop(C);
    t.disks.set(C, new MemDomainStore());
    const C2 = t.start(C);
    // Heard the leader, not caught up: not coherent (it would serve an empty state as current).
    t.run(30);
    expect(C2.raft.leader).toBe(A.id);
    expect(C2.raft.applied).toBeLessThan(A.raft.applied);
    expect(C2.coherenceState).toBe('decoherent');
    t.run(3000);
    console.log(
      `C ${C2.coherenceState}; leader ${t.leader()?.id} term ${t.leader()?.raft.term} (was ${term}); C applied ${C2.raft.applied} of ${A.raft.applied}, match at leader ${A.raft.progressOf(C)?.match}`,
    );
    expect(A.raft.term).toBe(term);
    expect(C2.raft.applied).toBe(A.raft.applied);
    expect(C2.state.digest()).toEqual(A.state.digest());
    expect(A.raft.stats.lostEntries).toBe(1);
    expect(A.raft.takeLost()).toEqual([{ member: C, acknowledged: 6, holds: 0 }]);
    expect(C2.coherenceState).toBe('coherent');
  });

  it('one refusal below the match index (reordered, or a lie) lowers nothing; refusals and acknowledgements alternated draw a bounded resend', () => {
    const t = new Trio(3);
    t.run(1000);
    const L = t.leader()!;
    const H = t.follower()!;
    for (let i = 0; i < 100; i++)
      L.propose(t.now, [{ register: 'kv', delta: { op: 1, key: new Uint8Array([i]), value: new Uint8Array(100) } }]);
    t.run(300);
    const M = L.raft.progressOf(H.id)!.match;
    expect(M).toBe(L.raft.lastIndex);
    t.stop(H.id);
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
    // One stale refusal, then its acknowledgement of M: nothing lowered.
    say(false, 3);
    t.run(20);
    say(true, M);
    t.run(100);
    expect(L.raft.progressOf(H.id)!.match).toBe(M);
    expect(L.raft.stats.lostEntries).toBe(0);
    // For 60 s (3,000 heartbeats): in each period, a refusal claiming it holds nothing and an
    // acknowledgement of everything, whatever it was sent.
    const beats = 3000;
    for (let i = 0; i < beats; i++) {
      say(false, 0);
      say(true, L.raft.lastIndex);
      t.run(20);
    }
    const log = L.raft.lastIndex * 130;
    console.log(
      `H sent ${fromH} octets; L sent it ${toH} octets of appends in ${beats} heartbeats (the log: ~${log} octets); lowered ${L.raft.stats.lostEntries} times`,
    );
    // Acknowledged between claims: never lowered.
    expect(L.raft.stats.lostEntries).toBe(0);
    expect(toH).toBeLessThan(fromH * 3);
    // Only refusals claiming nothing, every period: lowered after 2, 4, 8, ... 64 periods, not per period.
    const before = toH;
    for (let i = 0; i < beats; i++) {
      say(false, 0);
      t.run(20);
    }
    console.log(`refusals only, ${beats} heartbeats: lowered ${L.raft.stats.lostEntries} times, L sent ${toH - before} octets of appends`);
    expect(L.raft.stats.lostEntries).toBeLessThanOrEqual(2 + beats / 64);
    t.tap = undefined;
    expect(t.put('b', '2')).toBe('committed');
  });
});
